-- One row per device: the merge rule (lake/README.md, "Merge rule") over the
-- partial rows the devices job writes, each stating what one source said of
-- a device at one time (`last_seen`): a landing `devices` row (a GB28181
-- catalog item or DeviceInfo, a configured or first-seen device of any
-- adapter) or a device event.
--
-- Per column, the value of the latest row that has one (a null never
-- overwrites a value); at equal times the larger value wins (text in byte
-- order, numbers by value), so the result does not depend on file order.
-- The status is a column like the others: only status-bearing rows carry one.
-- `attributes` (JSON objects) merge per key by the same rule; a key whose
-- latest value is JSON null keeps its earlier value. A row without a time (a
-- source that said what it knows but not when) loses to every timed row.
WITH timed AS (
  SELECT *, coalesce(last_seen, first_seen, TIMESTAMPTZ '-infinity') AS said_at FROM {raw}
),
attribute_values AS (
  SELECT t.device_id, e.key, arg_max(e.value, row(t.said_at, e.value::VARCHAR)) AS value
  FROM timed AS t,
    json_each(
      CASE WHEN json_valid(t.attributes) AND json_type(t.attributes::JSON) = 'OBJECT' THEN t.attributes ELSE json_object()::VARCHAR END
    ) AS e
  WHERE e.type <> 'NULL'
  GROUP BY t.device_id, e.key
),
merged_attributes AS (
  SELECT device_id, to_json(map_from_entries(list((key, value) ORDER BY key)))::VARCHAR AS attributes
  FROM attribute_values
  GROUP BY device_id
),
columns AS (
  SELECT
    device_id,
    arg_max(name, row(said_at, name)) FILTER (WHERE name IS NOT NULL) AS name,
    arg_max(type, row(said_at, type)) FILTER (WHERE type IS NOT NULL) AS type,
    arg_max(protocol, row(said_at, protocol)) FILTER (WHERE protocol IS NOT NULL) AS protocol,
    arg_max(manufacturer, row(said_at, manufacturer)) FILTER (WHERE manufacturer IS NOT NULL) AS manufacturer,
    arg_max(model, row(said_at, model)) FILTER (WHERE model IS NOT NULL) AS model,
    arg_max(parent_id, row(said_at, parent_id)) FILTER (WHERE parent_id IS NOT NULL) AS parent_id,
    arg_max(civil_code, row(said_at, civil_code)) FILTER (WHERE civil_code IS NOT NULL) AS civil_code,
    arg_max(district, row(said_at, district)) FILTER (WHERE district IS NOT NULL) AS district,
    arg_max(address, row(said_at, address)) FILTER (WHERE address IS NOT NULL) AS address,
    arg_max(longitude, row(said_at, longitude)) FILTER (WHERE longitude IS NOT NULL) AS longitude,
    arg_max(latitude, row(said_at, latitude)) FILTER (WHERE latitude IS NOT NULL) AS latitude,
    arg_max(status, row(said_at, status)) FILTER (WHERE status IS NOT NULL) AS status,
    min(first_seen) AS first_seen,
    max(last_seen) AS last_seen
  FROM timed
  GROUP BY device_id
)
SELECT
  c.device_id, c.name, c.type, c.protocol, c.manufacturer, c.model, c.parent_id, c.civil_code, c.district,
  c.address, c.longitude, c.latitude, c.status, a.attributes, c.first_seen, c.last_seen
FROM columns AS c
LEFT JOIN merged_attributes AS a USING (device_id)
