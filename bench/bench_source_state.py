"""How the streaming jobs' checkpoint grows with the landing files their
continuous file source has read, and whether removing files shrinks it.

Flink 2.3's ContinuousFileSplitEnumerator keeps every path it has processed in
a HashSet (``pathsAlreadyProcessed``) and snapshots all of it into each
checkpoint's operator-coordinator state, inline in ``chk-N/_metadata``. This
lands files in steps, runs the real ``readings`` job streaming (1 s
checkpoints), and after each step records the newest ``_metadata`` size and the
whole checkpoint directory, with the landing collector removing consumed files
between steps.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_source_state.py [--steps 3 --files 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from citylake.config import load_config
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake.landing_gc import collect_landing
from citylake.lake.manifest import TableLog
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess
from citylake_devstack.process import CITYLAKE

T0 = 1_764_072_000_000
ROWS_PER_FILE = 4


def newest_metadata(checkpoints: Path) -> tuple[int, int, int]:
    """(checkpoint id, _metadata bytes, bytes of that chk-N directory)."""
    found = [(int(m.parent.name.removeprefix("chk-")), m) for m in checkpoints.glob("*/*/chk-*/_metadata")]
    if not found:
        return (0, 0, 0)
    n, meta = max(found)
    total = sum(p.stat().st_size for p in meta.parent.rglob("*") if p.is_file())
    return (n, meta.stat().st_size, total)


def lake_rows(layout: DataLayout) -> int:
    paths = TableLog(layout, table("readings")).snapshot().paths
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def reading(n: int) -> dict[str, object]:
    return {
        "device_id": f"d-{n % 97}", "ts": T0 + n, "metric": "kwh", "value": float(n), "text": None,
        "unit": None, "quality": 0, "source": "bench", "site": "bench", "ingest_ts": T0,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--files", type=int, default=1000, help="landing files per step")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="citylake-source-state-"))
    config_path = work / "city.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "site": "bench",
                "data_dir": str(work / "data"),
                "pipelines": {
                    "jobs": ["readings"],
                    "flink": {"parallelism": 1, "checkpoint_interval_s": 1, "monitor_interval_s": 0.5},
                },
                "landing": {"replay_window_h": 0},
            }
        )
    )
    config = load_config(config_path).config
    layout = DataLayout(config.data_dir)
    writer = LandingWriter(layout)
    argv = [*CITYLAKE, "pipeline", "run", "readings", "--mode", "streaming"]
    job = ManagedProcess("readings", [*argv, "--config", str(config_path)], work / "job.log").start()
    landed = 0
    print("files read | landing files left | checkpoint | _metadata bytes | chk dir bytes | bytes/file")
    try:
        for step in range(1, args.steps + 1):
            for _ in range(args.files):
                batcher = ColumnBatcher(table("readings"))
                for _ in range(ROWS_PER_FILE):
                    batcher.append(reading(landed))
                    landed += 1
                writer.write(table("readings"), batcher.take()[0])
            deadline = time.monotonic() + 900
            while lake_rows(layout) < landed:
                if not job.alive() or time.monotonic() > deadline:
                    raise SystemExit(f"the job did not catch up: {job.log_tail()}")
                time.sleep(2)
                print(f"  step {step}: lake {lake_rows(layout)} of {landed} rows", file=sys.stderr)
            time.sleep(4)  # a few more checkpoints after the last file
            removed = collect_landing(config).removed
            time.sleep(4)  # checkpoints after the removal: does the state shrink?
            n, meta, total = newest_metadata(layout.checkpoints)
            files = step * args.files
            left = len(list(layout.landing(table("readings")).rglob("*.parquet")))
            row = f"{files} | {left} (collector removed {removed}) | {n} | {meta} | {total}"
            print(f"{row} | {meta / files:.1f}", flush=True)
    finally:
        job.stop()


if __name__ == "__main__":
    main()
