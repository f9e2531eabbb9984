-- Per device and event-time minute, what its events said: the latest non-null
-- value of each attribute (ties at the same millisecond go to the larger
-- value, so the result does not depend on arrival order), the status of the
-- latest status-bearing event, and the first and last event times.
--
-- A running GROUP BY per device would emit updates, which the lake's
-- append-only file sink cannot write; a window emits once, when the
-- watermark passes its end (the allowed lateness after it), and never
-- changes. So the lake holds partial folds, a row per device and minute it
-- was heard from, and lake/views/devices.sql finishes the fold: the latest
-- window with a value wins. Repeated events change nothing in a fold, so
-- device events need no dedupe. An event later than the allowed lateness
-- misses its window in streaming mode; a batch run over the range includes it.
SELECT
  device_id,
  SUBSTRING(MAX(CONCAT(stamp, name)) FROM 18) AS name,
  SUBSTRING(MAX(CONCAT(stamp, type)) FROM 18) AS type,
  SUBSTRING(MAX(CONCAT(stamp, protocol)) FROM 18) AS protocol,
  SUBSTRING(MAX(CONCAT(stamp, manufacturer)) FROM 18) AS manufacturer,
  SUBSTRING(MAX(CONCAT(stamp, model)) FROM 18) AS model,
  SUBSTRING(MAX(CONCAT(stamp, parent_id)) FROM 18) AS parent_id,
  SUBSTRING(MAX(CONCAT(stamp, civil_code)) FROM 18) AS civil_code,
  SUBSTRING(MAX(CONCAT(stamp, district)) FROM 18) AS district,
  SUBSTRING(MAX(CONCAT(stamp, address)) FROM 18) AS address,
  CAST(SUBSTRING(MAX(CONCAT(stamp, longitude)) FROM 18) AS DOUBLE) AS longitude,
  CAST(SUBSTRING(MAX(CONCAT(stamp, latitude)) FROM 18) AS DOUBLE) AS latitude,
  SUBSTRING(MAX(CONCAT(stamp, status)) FROM 18) AS status,
  CAST(NULL AS STRING) AS attributes,
  CAST(MIN(ts) AS TIMESTAMP_LTZ(3)) AS first_seen,
  CAST(MAX(ts) AS TIMESTAMP_LTZ(3)) AS last_seen
FROM TABLE(TUMBLE(TABLE device_attributes, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, device_id
