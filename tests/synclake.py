"""Edge lakes for the sync tests: the test bench's part files
(`citylake_devstack.synclake`, shared with bench/bench_sync_outages.py)."""

from citylake_devstack.synclake import CHECK_SQL, DAY_MS, READINGS, T0, expected_check, part_file

__all__ = ["CHECK_SQL", "DAY_MS", "READINGS", "T0", "expected_check", "part_file"]
