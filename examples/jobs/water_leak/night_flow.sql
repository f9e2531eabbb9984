-- Water-leak detector: the night-time minimum flow of each water meter.
--
-- Between 02:00 and 04:00 (UTC) a district's taps are closed; a meter whose
-- flow never drops to (nearly) zero in those hours has water running all
-- night: a leak, a running toilet, a burst pipe behind the meter. One row per
-- meter and night, in streaming mode when the watermark passes the end of the
-- day (the allowed lateness after midnight), in batch mode at once.
SELECT
  device_id AS meter_id,
  window_start AS night,
  MIN(`value`) AS min_flow,
  AVG(`value`) AS avg_flow,
  COUNT(*) AS readings,
  MIN(`value`) > 0.05 AS leak_suspected
FROM TABLE(TUMBLE(TABLE readings_deduped, DESCRIPTOR(ts), INTERVAL '1' DAY))
WHERE metric = 'flow'
  AND `value` IS NOT NULL
  AND quality < 2
  AND DATE_FORMAT(ts, 'HH') IN ('02', '03')
GROUP BY window_start, window_end, device_id;
