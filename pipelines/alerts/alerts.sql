-- Lake rows: one when an alert opens (ended_at null), one more when it
-- closes; the lake is append-only, and lake/views/alerts.sql shows analysts
-- one row per alert, the closing one when there is one.
--
-- alert_id is the same on both rows and in every run over the same readings:
-- md5 of rule|device_id|metric|start in epoch ms. The rule fixes the metric
-- and the start is digits, so a device id holding "|" cannot make two alerts
-- collide. `value` is what opened the alert (the reading for a threshold
-- rule, the change per second for a rate rule), on both rows.
SELECT
  MD5(CONCAT_WS('|', rule, device_id, metric, CAST(started_ms AS STRING))) AS alert_id,
  device_id,
  metric,
  rule,
  severity,
  TO_TIMESTAMP_LTZ(started_ms, 3) AS started_at,
  TO_TIMESTAMP_LTZ(ended_ms, 3) AS ended_at,
  q AS `value`,
  message,
  DATE_FORMAT(TO_TIMESTAMP_LTZ(started_ms, 3), 'yyyy-MM-dd') AS `date`
FROM (
  SELECT rule, severity, message, device_id, metric, ts_ms AS started_ms, CAST(NULL AS BIGINT) AS ended_ms, q
  FROM alert_transitions
  WHERE violating
  UNION ALL
  SELECT rule, severity, message, device_id, metric, started_ms, ended_ms, q
  FROM alert_episodes
)
