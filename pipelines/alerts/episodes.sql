-- Closed alerts: each closing transition with the opening one before it.
-- Transitions of a key alternate open, close, open, ..., so the pattern holds
-- at most the one opening row of an alert in progress, however long it lasts.
SELECT rule, severity, message, device_id, metric, started_ms, ended_ms, q
FROM alert_transitions
MATCH_RECOGNIZE (
  PARTITION BY rule, kind, above, below, severity, message, device_id, metric
  ORDER BY ts
  MEASURES
    O.ts_ms AS started_ms,
    X.ts_ms AS ended_ms,
    O.q AS q
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (O X)
  DEFINE
    O AS O.violating,
    X AS NOT X.violating
)
