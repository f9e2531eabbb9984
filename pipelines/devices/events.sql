-- What each device event says about its device, as a partial `devices` row
-- at the event's time: one column per `devices` column, read from the
-- event's JSON attributes by the column's name, and the status the kind
-- implies. lake/views/devices.sql merges these rows with the sources' own
-- `devices` rows (lake/README.md, "Merge rule").
--
-- Two kinds use those names for something else: an alarm's `type`,
-- `longitude` and `latitude` describe the alarm, and a GB28181 register's
-- `address` is the SIP contact (host:port), not where the device stands.
-- `protocol` falls back to the type of the source that reported the event
-- (rendered by job.py from city.yaml's sources). An event's own attributes
-- (a register's expiry, an offline's reason) describe the event, not the
-- device: they stay in lake `device_events` (the events job).
SELECT
  device_id,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.name') END AS name,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.type') END AS type,
  COALESCE(JSON_VALUE(attributes, '$.protocol'), {source_protocol}) AS protocol,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.manufacturer') END AS manufacturer,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.model') END AS model,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.parent_id') END AS parent_id,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.civil_code') END AS civil_code,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.district') END AS district,
  CASE WHEN kind NOT IN ('alarm', 'register') THEN JSON_VALUE(attributes, '$.address') END AS address,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.longitude' RETURNING DOUBLE) END AS longitude,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.latitude' RETURNING DOUBLE) END AS latitude,
  CASE
    WHEN kind IN ('online', 'register', 'keepalive') THEN 'online'
    WHEN kind IN ('offline', 'unregister') THEN 'offline'
  END AS status,
  CAST(NULL AS STRING) AS attributes,
  CAST(ts AS TIMESTAMP_LTZ(3)) AS first_seen,
  CAST(ts AS TIMESTAMP_LTZ(3)) AS last_seen
FROM landing_device_events
