-- One row per event key (device_id, ts, kind), by the conflict rule of
-- readings.sql (lake/README.md, "Conflict rule"): the same event shipped by
-- two edges, or replayed past the job's dedupe window, counts once; the later
-- ingest_ts wins, then the larger site, attributes and source.
SELECT device_id, ts, kind, e.attributes AS attributes, e.source AS source, e.site AS site,
  e.ingest_ts AS ingest_ts, "date"
FROM (
  SELECT device_id, ts, kind, "date",
    arg_max(
      struct_pack(attributes, source, site, ingest_ts),
      struct_pack(ingest_ts, site, has_attributes := attributes IS NOT NULL, attributes, source)
    ) AS e
  FROM {raw}
  GROUP BY device_id, ts, kind, "date"
)
