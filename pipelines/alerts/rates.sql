-- What each rule compares, per reading: the value itself (threshold) or its
-- change per second since the device's previous reading of the metric (rate),
-- and whether that breaks the rule's bounds.
--
-- The previous reading comes from MATCH_RECOGNIZE rather than LAG over an
-- OVER window: pattern state has no idle-state TTL (table.exec.state.ttl, the
-- dedupe window), so a device that goes quiet for an hour, or a job restored
-- after an outage, still knows its last reading. Pattern navigation cannot
-- look before a match, though, so every reading also enters as a ghost copy
-- (seq 0) sorted just before it: a reading C matches as "previous real
-- reading A, its own ghost G, itself", or as "G C" alone when it is the first
-- reading of its key. Both candidates end at C; Flink emits the one that
-- started earlier and SKIP TO LAST C drops the other, so each reading comes
-- out exactly once, with A when there is one. State per key: a reading or two.
SELECT
  rule, kind, above, below, severity, message, device_id, metric, ts, ts_ms, q,
  COALESCE(q > above, FALSE) OR COALESCE(q < below, FALSE) AS violating
FROM (
  SELECT *, 1 AS seq FROM alert_readings
  UNION ALL
  SELECT *, 0 AS seq FROM alert_readings
)
MATCH_RECOGNIZE (
  -- A rule's settings are constant for the rule: as keys they come through.
  PARTITION BY rule, kind, above, below, severity, message, device_id, metric
  ORDER BY ts, seq
  MEASURES
    -- MATCH_ROWTIME keeps event time an attribute for the next pattern step.
    MATCH_ROWTIME() AS ts,
    C.ts_ms AS ts_ms,
    CASE
      WHEN C.kind <> 'rate' THEN C.`value`
      -- Asked by count: an absent A's NOT NULL columns read as defaults, not null.
      WHEN COUNT(A.seq) = 0 THEN CAST(NULL AS DOUBLE)
      ELSE (C.`value` - A.`value`) * CAST(1000 AS DOUBLE) / (C.ts_ms - A.ts_ms)
    END AS q
  ONE ROW PER MATCH
  AFTER MATCH SKIP TO LAST C
  PATTERN (A? G C)
  DEFINE
    A AS A.seq = 1,
    G AS G.seq = 0,
    C AS C.seq = 1
)
