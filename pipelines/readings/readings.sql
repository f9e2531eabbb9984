-- landing readings -> lake readings. Dedupe and late-data handling arrive with
-- the unified stream/batch work (issue 5); the same query serves both modes.
SELECT
  device_id, ts, metric, `value`, `text`, unit, quality, source, site, ingest_ts,
  `date`
FROM landing_readings
