-- One row per alert. The alerts job appends a row when an alert opens
-- (ended_at null) and another with the same alert_id when it closes, so the
-- closing row wins; should a re-run have closed an alert twice, the latest
-- close wins (the order the alerts service uses).
SELECT alert_id, device_id, metric, rule, severity, started_at, ended_at, "value", message, "date"
FROM {raw}
QUALIFY row_number() OVER (PARTITION BY alert_id ORDER BY ended_at IS NULL, ended_at DESC) = 1
