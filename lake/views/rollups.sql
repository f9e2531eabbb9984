-- readings_1m and readings_1h: one row per rollup key (device_id, metric, window_start): the conflict rule
-- of rollups (lake/README.md, "Conflict rule"), the same at every tier. A key
-- arrives more than once when two sites rolled up the same device's window
-- (two edges heard it, a backfill was replayed at two edges, the device moved
-- sites within the window) or one site rolled it up twice (a batch run over a
-- range streaming already closed). Summing the copies would count a reading
-- heard twice twice, so one row is kept: the larger count (for copies of the
-- same readings the counts are equal and any copy is exact; otherwise the copy
-- that saw more of the window, e.g. a backfill that took late readings in),
-- then the larger site name, a null site (a file from before rollups carried
-- one) below any, then the larger last, max, min and avg, so the answer never
-- depends on file order or the path a file took.
-- A hash aggregate over the key, as in the readings view.
SELECT device_id, metric, window_start, r."count" AS "count", r."min" AS "min", r."max" AS "max",
  r."avg" AS "avg", r."last" AS "last", r.site AS site, "date"
FROM (
  SELECT device_id, metric, window_start, "date",
    arg_max(
      struct_pack("count", "min", "max", "avg", "last", site),
      struct_pack(
        "count", has_site := site IS NOT NULL, site, has_last := "last" IS NOT NULL, "last",
        has_max := "max" IS NOT NULL, "max", has_min := "min" IS NOT NULL, "min",
        has_avg := "avg" IS NOT NULL, "avg"
      )
    ) AS r
  FROM {raw}
  GROUP BY device_id, metric, window_start, "date"
)
