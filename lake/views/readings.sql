-- One row per reading key (device_id, metric, ts): the conflict rule
-- (lake/README.md, "Conflict rule"), the same at every tier. A key arrives
-- more than once when two edges heard the same device (or a device moved
-- sites and both sent it), or a backfill replayed it past the job's dedupe
-- window; synced files keep every copy, so the view decides. The event time
-- is the key, so it is always equal: the later ingest_ts wins (the latest
-- word on that instant), then the larger site name, then the larger value,
-- text, quality, unit and source, a null below any value (as in the devices
-- merge: a null never wins over a value), so the answer never depends on which
-- file was read first or which path a file took to this tier.
-- A hash aggregate, not a window: a window sorts the whole lake. "date" is a
-- grouping key (ts decides it) so partition filters still prune files.
SELECT device_id, ts, metric, r.value AS "value", r.text AS "text", r.unit AS unit, r.quality AS quality,
  r.source AS source, r.site AS site, r.ingest_ts AS ingest_ts, "date"
FROM (
  SELECT device_id, metric, ts, "date",
    arg_max(
      struct_pack("value", "text", unit, quality, source, site, ingest_ts),
      struct_pack(
        ingest_ts, site, has_value := "value" IS NOT NULL, "value", has_text := "text" IS NOT NULL, "text",
        quality, has_unit := unit IS NOT NULL, unit, source
      )
    ) AS r
  FROM {raw}
  GROUP BY device_id, metric, ts, "date"
)
