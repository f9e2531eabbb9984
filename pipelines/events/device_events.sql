-- Landing device events of every kind -> lake device_events, one row per
-- (device_id, ts, kind, source, attributes): an event landed twice (a replayed
-- landing file, a gateway resending its buffer, a backfill over processed
-- data within the dedupe window) counts once, the first copy read wins (as
-- readings/dedupe.sql; ingest_ts is left out of the key, a resent event is
-- ingested again). Processing-time order keeps it append-only in both modes.
SELECT device_id, ts, kind, attributes, source, site, ingest_ts, `date`
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY device_id, ts, kind, source, attributes ORDER BY proc ASC) AS copy_number
  FROM landing_device_events
)
WHERE copy_number = 1
