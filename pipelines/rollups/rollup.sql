-- Per device, metric and event-time window: count, min, max, avg and the last
-- value (the one with the latest ts; ties broken by the larger value, so the
-- result does not depend on arrival order and both modes agree). Windows close
-- when the watermark (event time minus the allowed lateness) passes their end;
-- text readings are not rolled up. A reading later than that (a gateway
-- uploading an hour-old buffer) misses the streaming windows; a batch run over
-- the range (citylake pipeline run rollups --mode batch --from --to) includes it.
-- Rows carry the site of the readings they roll up (one per edge; the lake's
-- readings_1m/1h views keep one row per window where two sites' rows meet).
SELECT
  device_id,
  metric,
  CAST(window_start AS TIMESTAMP_LTZ(3)) AS window_start,
  COUNT(*) AS `count`,
  MIN(`value`) AS `min`,
  MAX(`value`) AS `max`,
  AVG(`value`) AS `avg`,
  CAST(SPLIT_INDEX(MAX(CONCAT(DATE_FORMAT(ts, 'yyyyMMddHHmmssSSS'), '|', CAST(`value` AS STRING))), '|', 1) AS DOUBLE) AS `last`,
  site,
  DATE_FORMAT(window_start, 'yyyy-MM-dd') AS `date`
FROM TABLE(TUMBLE(TABLE readings_deduped, DESCRIPTOR(ts), INTERVAL '{window}'))
WHERE `value` IS NOT NULL
GROUP BY window_start, window_end, device_id, metric, site
