-- landing readings -> lake readings; the same statement in streaming and batch.
SELECT device_id, ts, metric, `value`, `text`, unit, quality, source, site, ingest_ts, `date`
FROM readings_deduped
