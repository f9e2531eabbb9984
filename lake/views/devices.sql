-- One row per device, finishing the fold the devices job starts: the job
-- writes a partial row per device and event-time minute (a window's latest
-- non-null value of each attribute, its latest status, its first and last
-- event). A device's windows never overlap, so the row with the later
-- last_seen is the later window: each attribute comes from the latest row
-- that has it (equal last_seen only when a re-run wrote a window twice; the
-- larger value then wins, as in the job). The status comes from the latest
-- row whose window held a status-bearing event.
SELECT
  device_id,
  arg_max(name, row(last_seen, name)) FILTER (WHERE name IS NOT NULL) AS name,
  arg_max(type, row(last_seen, type)) FILTER (WHERE type IS NOT NULL) AS type,
  arg_max(protocol, row(last_seen, protocol)) FILTER (WHERE protocol IS NOT NULL) AS protocol,
  arg_max(manufacturer, row(last_seen, manufacturer)) FILTER (WHERE manufacturer IS NOT NULL) AS manufacturer,
  arg_max(model, row(last_seen, model)) FILTER (WHERE model IS NOT NULL) AS model,
  arg_max(parent_id, row(last_seen, parent_id)) FILTER (WHERE parent_id IS NOT NULL) AS parent_id,
  arg_max(civil_code, row(last_seen, civil_code)) FILTER (WHERE civil_code IS NOT NULL) AS civil_code,
  arg_max(district, row(last_seen, district)) FILTER (WHERE district IS NOT NULL) AS district,
  arg_max(address, row(last_seen, address)) FILTER (WHERE address IS NOT NULL) AS address,
  arg_max(longitude, row(last_seen, longitude)) FILTER (WHERE longitude IS NOT NULL) AS longitude,
  arg_max(latitude, row(last_seen, latitude)) FILTER (WHERE latitude IS NOT NULL) AS latitude,
  arg_max(status, row(last_seen, status)) FILTER (WHERE status IS NOT NULL) AS status,
  arg_max(attributes, row(last_seen, attributes)) FILTER (WHERE attributes IS NOT NULL) AS attributes,
  min(first_seen) AS first_seen,
  max(last_seen) AS last_seen
FROM {raw}
GROUP BY device_id
