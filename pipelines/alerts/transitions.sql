-- The readings where a rule's verdict changes: the first reading that breaks
-- the bounds (an alert opens) and the first one back inside them (it closes).
-- Before its first reading a key counts as inside the bounds, so a device
-- whose very first reading is out of bounds opens an alert at once. Same
-- previous-reading pattern as rates.sql, for the same reasons; every reading
-- must match (the filter comes after), or a reading whose pair failed would
-- match again as if it were the first of its key.
SELECT rule, kind, above, below, severity, message, device_id, metric, ts, ts_ms, q, violating
FROM (
  SELECT *, 1 AS seq FROM alert_rates
  UNION ALL
  SELECT *, 0 AS seq FROM alert_rates
)
MATCH_RECOGNIZE (
  PARTITION BY rule, kind, above, below, severity, message, device_id, metric
  ORDER BY ts, seq
  MEASURES
    MATCH_ROWTIME() AS ts,
    C.ts_ms AS ts_ms,
    C.q AS q,
    C.violating AS violating,
    A.violating AS was_violating,
    -- An absent A's NOT NULL columns read as defaults (FALSE), so whether
    -- there was a previous reading is asked by count.
    COUNT(A.seq) AS previous
  ONE ROW PER MATCH
  AFTER MATCH SKIP TO LAST C
  PATTERN (A? G C)
  DEFINE
    A AS A.seq = 1,
    G AS G.seq = 0,
    C AS C.seq = 1
)
WHERE violating <> (previous > 0 AND was_violating)
