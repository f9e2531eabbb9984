-- The sources' own `devices` rows (a GB28181 catalog item or DeviceInfo, a
-- configured Modbus/OPC UA device, an MQTT device's template levels): each
-- is what its source knew of the device at `last_seen`, or at `first_seen`
-- when it gives only that. The lake row carries that time as `last_seen`,
-- the one time lake/views/devices.sql orders rows by. A row giving neither
-- is kept as it came (the view ranks it below every timed row).
SELECT
  device_id, name, type, protocol, manufacturer, model, parent_id, civil_code, district, address,
  longitude, latitude, status, attributes,
  COALESCE(first_seen, last_seen) AS first_seen,
  COALESCE(last_seen, first_seen) AS last_seen
FROM landing_devices
