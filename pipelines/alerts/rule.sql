-- The readings the alert rules watch, each paired with every rule whose
-- metric and device prefix it matches. The rules arrive as one array literal
-- that job.py renders below (quoted and escaped values, never SQL from the
-- config or the alerts service), unnested per reading. The array is the only
-- thing a rule set changes: any set of rules, none included, gives the same
-- SQL with other literals and so the same operator graph, which is what lets
-- a job re-planned for new rules restore the state of the one it replaces
-- (files read, dedupe keys, open alerts). UNNEST of a column is a correlate,
-- which keeps `ts` an event-time attribute for MATCH_RECOGNIZE; a join with
-- a VALUES table would not. The array's first element is a rule with a null
-- metric, which matches nothing and gives the array its type when no rule
-- is set.
--
-- Text readings have no value to compare, and a reading its device marks bad
-- (quality 2) would open alerts about the sensor rather than the thing
-- measured, so both are left out, as if never sent. The rule's settings ride
-- along as columns: the steps after this one hold every rule at once.
SELECT
  r.rule,
  r.kind,
  r.above,
  r.below,
  r.severity,
  r.message,
  d.device_id,
  d.metric,
  d.ts,
  -- Epoch milliseconds (the session zone is UTC): exact time differences for
  -- rates, and the start time in alert ids.
  EXTRACT(EPOCH FROM d.ts) * 1000 + EXTRACT(MILLISECOND FROM d.ts) AS ts_ms,
  d.`value`
FROM (SELECT *, {rules} AS rules FROM readings_deduped) AS d
CROSS JOIN UNNEST(d.rules) AS r (rule, kind, above, below, severity, message, rule_metric, device_prefix)
WHERE d.metric = r.rule_metric
  AND d.`value` IS NOT NULL
  AND d.quality < 2
  AND (r.device_prefix IS NULL OR POSITION(r.device_prefix IN d.device_id) = 1)
