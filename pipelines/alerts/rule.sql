-- The readings one alert rule watches. Each value in braces is a literal that
-- job.py renders from the rule (quoted and escaped), never SQL from the
-- config. Text readings have no value to compare, and a reading its device
-- marks bad (quality 2) would open alerts about the sensor rather than the
-- thing measured, so both are left out, as if never sent. The rule's settings
-- ride along as columns: the steps after this one hold every rule at once.
SELECT
  CAST({rule} AS STRING) AS rule,
  CAST({kind} AS STRING) AS kind,
  CAST({above} AS DOUBLE) AS above,
  CAST({below} AS DOUBLE) AS below,
  CAST({severity} AS STRING) AS severity,
  CAST({message} AS STRING) AS message,
  device_id,
  metric,
  ts,
  -- Epoch milliseconds (the session zone is UTC): exact time differences for
  -- rates, and the start time in alert ids.
  EXTRACT(EPOCH FROM ts) * 1000 + EXTRACT(MILLISECOND FROM ts) AS ts_ms,
  `value`
FROM readings_deduped
WHERE metric = CAST({metric} AS STRING)
  AND `value` IS NOT NULL
  AND quality < 2
  AND (CAST({device_prefix} AS STRING) IS NULL OR POSITION(CAST({device_prefix} AS STRING) IN device_id) = 1)
