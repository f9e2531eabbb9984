-- Landing readings with repeats removed: one row per (device_id, metric, ts).
-- A reading sent twice (a gateway retry, a replayed buffer, a backfill over
-- processed data) counts once; the first copy read wins. Ordering by
-- processing time keeps this append-only in streaming mode, which the lake's
-- file sink and the windows downstream need. Keys are remembered for
-- pipelines.flink.dedupe_window_s (table.exec.state.ttl).
SELECT device_id, ts, metric, `value`, `text`, unit, quality, source, site, ingest_ts, `date`
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY device_id, metric, ts ORDER BY proc ASC) AS copy_number
  FROM landing_readings
)
WHERE copy_number = 1
