-- What each device event says about its device, one column per `devices`
-- column, read from the event's JSON attributes by the column's name.
--
-- Two kinds use those names for something else: an alarm's `type`,
-- `longitude` and `latitude` describe the alarm, and a GB28181 register's
-- `address` is the SIP contact (host:port), not where the device stands.
-- `protocol` falls back to the type of the source that reported the event
-- (rendered by job.py from city.yaml's sources).
--
-- `stamp` (event time as fixed-width digits) prefixes each value in the fold,
-- so MAX picks the latest value whatever order events arrived in.
SELECT
  device_id,
  ts,
  DATE_FORMAT(ts, 'yyyyMMddHHmmssSSS') AS stamp,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.name') END AS name,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.type') END AS type,
  COALESCE(JSON_VALUE(attributes, '$.protocol'), {source_protocol}) AS protocol,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.manufacturer') END AS manufacturer,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.model') END AS model,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.parent_id') END AS parent_id,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.civil_code') END AS civil_code,
  CASE WHEN kind <> 'alarm' THEN JSON_VALUE(attributes, '$.district') END AS district,
  CASE WHEN kind NOT IN ('alarm', 'register') THEN JSON_VALUE(attributes, '$.address') END AS address,
  -- Through text so the fold treats every column alike; Java's shortest
  -- double text reads back as the same double.
  CASE WHEN kind <> 'alarm' THEN CAST(JSON_VALUE(attributes, '$.longitude' RETURNING DOUBLE) AS STRING) END
    AS longitude,
  CASE WHEN kind <> 'alarm' THEN CAST(JSON_VALUE(attributes, '$.latitude' RETURNING DOUBLE) AS STRING) END
    AS latitude,
  CASE
    WHEN kind IN ('online', 'register', 'keepalive') THEN 'online'
    WHEN kind IN ('offline', 'unregister') THEN 'offline'
  END AS status
FROM landing_device_events
