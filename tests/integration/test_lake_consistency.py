"""Snapshot consistency: analyst queries run in a loop while a real streaming
Flink job writes the lake and the real ``citylake lake maintain`` process
compacts and vacuums beside it on its schedule. No query may see a duplicate,
lose a row an earlier query saw, or meet a half-written file; at the end the
lake holds every landed reading exactly once.

Two kinds of reader: ``Lake.cursor()`` (what the services use) and one stock
DuckDB CLI session (PyPI ``duckdb-cli``) opened once on ``citylake lake
views`` and kept open on stdin for the whole run, so the same session must
see new Flink commits and survive every compaction and vacuum."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake import Lake
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess
from citylake_devstack.process import CITYLAKE

pytestmark = pytest.mark.integration
T0 = 1_764_072_000_000
DUCKDB_CLI = Path(sys.executable).parent / "duckdb"  # PyPI duckdb-cli, pinned in constraints.txt
BATCH = 25
# Reading n has value n: a repeat shows in the distinct counts, a gap or a
# partial file in the sum once everything has landed.
CHECK_SQL = """
SELECT count(*), count(DISTINCT (device_id, ts)), coalesce(sum(value), 0),
       coalesce(max(value), -1), count(DISTINCT value)
FROM readings
"""


def meter_reading(n: int) -> dict[str, Any]:
    return {
        "device_id": f"meter-{n % 17}", "ts": T0 + n, "metric": "kwh", "value": float(n), "text": None,
        "unit": "kWh", "quality": 0, "source": "modbus", "site": "s", "ingest_ts": T0,
    }  # fmt: skip


class Traffic:
    """Ingest landing files, analysts querying (maintenance is its own process)."""

    def __init__(self, layout: DataLayout, lake: Lake) -> None:
        self.layout, self.lake = layout, lake
        self.writer = LandingWriter(layout)
        self.stop = threading.Event()
        self.landed = 0
        self.problems: list[str] = []
        self.counts = {"queries": 0, "cli_queries": 0}
        self.cli_seen: set[int] = set()  # row counts one CLI session saw: new commits show

    def ingest(self) -> None:
        while not self.stop.is_set():
            batcher = ColumnBatcher(table("readings"))
            for n in range(self.landed, self.landed + BATCH):
                batcher.append(meter_reading(n))
            self.writer.write(table("readings"), batcher.take()[0])
            self.landed += BATCH
            time.sleep(0.2)

    def query(self) -> None:
        seen = 0
        while not self.stop.is_set():
            try:
                rows, distinct, _, _, values = self.lake.cursor().execute(CHECK_SQL).fetchone()  # type: ignore[misc]
            except Exception as exc:  # a half-written or vanished file surfaces here
                self.problems.append(f"query failed: {exc}")
                return
            self.counts["queries"] += 1
            if rows != distinct or rows != values:
                self.problems.append(f"duplicates: {rows} rows, {distinct} keys, {values} values")
            if rows < seen:
                self.problems.append(f"rows went from {seen} to {rows}")
            seen = rows
            time.sleep(0.05)

    def query_cli(self, cli: DuckdbSession) -> None:
        seen = 0
        while not self.stop.is_set():
            try:
                rows, distinct, _, _, values = (int(float(v)) for v in cli.query(CHECK_SQL).split(","))
            except (RuntimeError, ValueError) as exc:
                self.problems.append(f"DuckDB CLI: {exc}")
                return
            self.counts["cli_queries"] += 1
            self.cli_seen.add(rows)
            if rows != distinct or rows != values:
                self.problems.append(f"DuckDB CLI duplicates: {rows} rows, {distinct} keys, {values} values")
            if rows < seen:
                self.problems.append(f"DuckDB CLI rows went from {seen} to {rows}")
            seen = rows
            time.sleep(0.3)


class DuckdbSession:
    """One stock DuckDB CLI process on the views file, fed queries on stdin."""

    def __init__(self, views: Path, workdir: Path) -> None:
        if not DUCKDB_CLI.exists():
            raise RuntimeError(f"{DUCKDB_CLI} missing: install the dev extra (duckdb-cli, constraints.txt)")
        self.stderr_path = workdir / "duckdb-cli.err"
        self.proc = subprocess.Popen(
            [str(DUCKDB_CLI), "-csv", "-noheader", "-init", str(views)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "w"),  # noqa: SIM115 - the child's for its lifetime
            text=True,
            bufsize=1,
        )
        self.asked = 0
        # Lines through a thread and a queue: select() on the pipe misses lines
        # already in the reader's buffer.
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")  # end of output: the CLI exited

    def query(self, sql: str, timeout_s: float = 60) -> str:
        """The one result line of ``sql``; RuntimeError with the CLI's stderr if none."""
        assert self.proc.stdin is not None
        self.asked += 1
        marker = f"END-{self.asked}"
        self.proc.stdin.write(f"{sql.strip().rstrip(';')};\nSELECT '{marker}';\n")
        self.proc.stdin.flush()
        lines = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"no answer in {timeout_s} s; stderr: {self.stderr()}") from None
            if not line:
                raise RuntimeError(f"the CLI exited; stderr: {self.stderr()}")
            if line.strip() == marker:
                break
            lines.append(line.strip())
        if len(lines) != 1:
            raise RuntimeError(f"expected one result line, got {lines}; stderr: {self.stderr()}")
        return lines[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def maintenance_actions(log_text: str) -> list[dict[str, Any]]:
    """The JSON action lines ``citylake lake maintain`` wrote among its log."""
    return [json.loads(line) for line in log_text.splitlines() if line.startswith('{"at"')]


def summed(actions: list[dict[str, Any]], task: str, key: str) -> int:
    return sum(a.get(key, 0) for a in actions if a["task"] == task and a["table"] == "readings")


def start_after_first_commit(
    ingest: threading.Thread, queries: list[threading.Thread], lake: Lake, job: ManagedProcess
) -> None:
    """Ingest first; the queries once the job's first commit is in the lake."""
    ingest.start()
    deadline = time.monotonic() + 300
    while not (lake.cursor().execute(CHECK_SQL).fetchone() or (0,))[0]:
        assert job.alive() and time.monotonic() < deadline, job.log_tail()
        time.sleep(0.5)
    for thread in queries:
        thread.start()


def test_queries_see_consistent_snapshots_while_flink_writes_and_maintenance_runs(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    # Compaction of 2 files and more, vacuum with a 1 s grace, each every
    # second: deletes happen during the test, and the grace is still far
    # longer than a query takes from planning to reading.
    maintenance = {"compact_every_s": 1, "vacuum_every_s": 1, "tables": ["readings"]}
    config = city_config(lake={"compact_min_files": 2, "vacuum_grace_s": 1, "maintenance": maintenance})
    layout = DataLayout(load_config(config).config.data_dir)
    lake = Lake(layout)
    traffic = Traffic(layout, lake)
    views = tmp_path / "views.sql"
    views.write_text(
        subprocess.run(
            [*CITYLAKE, "lake", "views", "--config", str(config)], capture_output=True, text=True, check=True
        ).stdout
    )
    cli = DuckdbSession(views, tmp_path)
    argv = [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming", "--config", str(config)]
    job = ManagedProcess("readings-job", argv, tmp_path / "job.log").start()
    maintain_argv = [*CITYLAKE, "lake", "maintain", "--config", str(config)]
    maintainer = ManagedProcess("lake-maintain", maintain_argv, tmp_path / "maintain.log").start()
    threads = [
        threading.Thread(target=traffic.ingest),
        threading.Thread(target=traffic.query),
        threading.Thread(target=traffic.query),
        threading.Thread(target=traffic.query_cli, args=(cli,)),
    ]
    try:
        # The queries' 30 s start with the job's first commit: a job slow to
        # start (a loaded machine, two test workers) would leave them nothing
        # but an empty lake to look at.
        start_after_first_commit(threads[0], threads[1:], lake, job)
        time.sleep(30)
        traffic.stop.set()
        for thread in threads:
            thread.join(60)
        # SIGTERM, as Kubernetes stops the workload: it ends after the commit
        # under way, with exit code 0. What Flink commits from now on is left
        # for the one-shot run below.
        stopped = maintainer.stop(timeout_s=60)
        deadline = time.monotonic() + 90
        final: Any = (0,)
        while final[0] < traffic.landed and time.monotonic() < deadline:
            assert job.alive(), job.log_tail()
            time.sleep(1)
            final = lake.cursor().execute(CHECK_SQL).fetchone()
        once = subprocess.run(
            [*maintain_argv, "--once"], capture_output=True, text=True, timeout=300, check=False
        )
        after = lake.cursor().execute(CHECK_SQL).fetchone()
        cli_after = cli.query(CHECK_SQL)
    finally:
        traffic.stop.set()
        job.stop()
        maintainer.stop()
        cli.close()
        lake.close()
    actions = maintenance_actions(maintainer.log_tail(10_000_000))
    counts, landed = traffic.counts, traffic.landed
    assert not traffic.problems, traffic.problems[:5]
    assert stopped == 0 and "maintenance stopped" in maintainer.log_tail(), maintainer.log_tail()
    assert not [a for a in actions if "error" in a], [a for a in actions if "error" in a][:3]
    compacted, deleted = summed(actions, "compact", "files_out"), summed(actions, "vacuum", "files_deleted")
    assert counts["queries"] > 100 and counts["cli_queries"] > 20, counts
    assert len(traffic.cli_seen) > 10, sorted(traffic.cli_seen)
    assert compacted > 3 and deleted > 0, (compacted, deleted, counts)
    expected = (landed, landed, float(landed * (landed - 1) // 2), float(landed - 1), landed)
    assert tuple(final) == expected, (final, expected, counts)
    assert once.returncode == 0, once.stderr[-3000:]
    assert summed(maintenance_actions(once.stdout), "compact", "rows") > 0, once.stdout
    assert after == final
    assert tuple(float(v) for v in cli_after.split(",")) == tuple(float(v) for v in expected), cli_after
