-- readings_1h: the rule of readings_1m.sql (one row per device_id, metric, window_start).
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
