-- Landing rejects -> lake rejected, one row per (source, received_at,
-- reason, raw): a replayed landing file adds nothing; the first copy read wins.
SELECT source, received_at, reason, `raw`, `date`
FROM (
  SELECT *,
    ROW_NUMBER() OVER (PARTITION BY source, received_at, reason, `raw` ORDER BY proc ASC) AS copy_number
  FROM landing_rejected
)
WHERE copy_number = 1
