"""The landing collector's proofs on small lake files written here (the
integration test runs it beside the real jobs: tests/integration/test_landing_gc.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from citylake.config import CityConfig
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake.landing_gc import JOB_READS, collect_landing, landing_files
from citylake.schemas import DataLayout, table

T0 = 1_764_072_000_000  # 2025-11-25 12:00:00 UTC, a whole hour
MINUTE = 60_000


def land(layout: DataLayout, start_ms: int, count: int = 3, step_ms: int = 1000) -> Path:
    batcher = ColumnBatcher(table("readings"))
    for i in range(count):
        batcher.append(
            {"device_id": f"d-{i}", "ts": start_ms + i * step_ms, "metric": "kwh", "value": 1.0, "text": None,
             "unit": None, "quality": 0, "source": "m", "site": "s", "ingest_ts": T0}
        )  # fmt: skip
    (landed,) = LandingWriter(layout).write(table("readings"), batcher.take()[0])
    return landed.path


def lake_file(
    layout: DataLayout, name: str, rows: dict[str, list[object]], types: dict[str, pa.DataType]
) -> None:
    """A committed Flink part file as the jobs write them (naive UTC ms instants)."""
    directory = layout.lake(table(name)) / "date=2025-11-25"
    directory.mkdir(parents=True, exist_ok=True)
    count = len(list(directory.iterdir()))
    arrays = {k: pa.array(v, type=types.get(k)) for k, v in rows.items()}
    pq.write_table(pa.table(arrays), directory / f"part-{count}-0.parquet")


def config(tmp_path: Path, jobs: list[str], replay_window_h: float = 0) -> CityConfig:
    return CityConfig.model_validate(
        {
            "site": "s",
            "data_dir": tmp_path,
            "pipelines": {"jobs": jobs},
            "landing": {"replay_window_h": replay_window_h},
        }
    )


def readings_keys(layout: DataLayout, keys: list[tuple[str, int]]) -> None:
    lake_file(
        layout,
        "readings",
        {"device_id": [k[0] for k in keys], "metric": ["kwh"] * len(keys), "ts": [k[1] for k in keys]},
        {"ts": pa.timestamp("ms")},
    )


def test_every_job_reads_what_the_collector_has_a_witness_for() -> None:
    from citylake.pipelines.jobs import JOB_NAMES, job

    for name in JOB_NAMES:
        assert name in JOB_READS, (
            f"job {name} has no witness in lake/landing_gc.py: its inputs would never go"
        )
        assert set(JOB_READS[name]) == set(job(name).module.INPUTS), name


def test_a_file_goes_only_when_the_lake_holds_every_key_of_it(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    whole, partial = land(layout, T0), land(layout, T0 + 10_000)
    readings_keys(layout, [("d-0", T0), ("d-1", T0 + 1000), ("d-2", T0 + 2000), ("d-0", T0 + 10_000)])
    result = collect_landing(config(tmp_path, ["readings"]))
    assert not whole.exists() and partial.exists()
    (entry,) = result.tables
    assert (entry.examined, entry.removed, entry.waiting) == (2, 1, {"readings": 1})


def test_lake_files_written_before_a_file_landed_prove_nothing(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    readings_keys(layout, [("d-0", T0), ("d-1", T0 + 1000), ("d-2", T0 + 2000)])
    old = next(layout.lake(table("readings")).rglob("part-*"))
    os.utime(old, ns=(1, 1))
    path = land(layout, T0)
    collect_landing(config(tmp_path, ["readings"]))
    assert path.exists()


def test_an_event_time_job_consumed_a_file_once_its_windows_closed(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    path = land(layout, T0 + 5 * MINUTE + 30_000)  # ts in minute 5 of hour 12
    ms = {"window_start": pa.timestamp("ms")}

    def windows(name: str, start: int) -> None:
        lake_file(layout, name, {"device_id": ["x"], "metric": ["kwh"], "window_start": [start]}, ms)

    windows("readings_1m", T0 + 4 * MINUTE)  # the watermark is only past minute 4
    windows("readings_1h", T0 - 60 * MINUTE)  # hour 11 closed, not hour 12
    collect_landing(config(tmp_path, ["rollups"]))
    assert path.exists()
    windows("readings_1m", T0 + 5 * MINUTE)  # minute 5 closed, the hour not yet
    result = collect_landing(config(tmp_path, ["rollups"]))
    assert path.exists() and result.tables[0].waiting == {"rollups": 1}
    windows("readings_1h", T0)  # hour 12 closed
    collect_landing(config(tmp_path, ["rollups"]))
    assert not path.exists()


def test_every_reader_must_have_consumed_a_file(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    path = land(layout, T0)
    readings_keys(layout, [("d-0", T0), ("d-1", T0 + 1000), ("d-2", T0 + 2000)])
    result = collect_landing(config(tmp_path, ["readings", "rollups"]))
    assert path.exists() and result.tables[0].waiting == {"readings": 0, "rollups": 1}


def test_the_replay_window_keeps_consumed_files(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    path = land(layout, T0)
    readings_keys(layout, [("d-0", T0), ("d-1", T0 + 1000), ("d-2", T0 + 2000)])
    landed_ns = landing_files(layout, table("readings"))[0].landed_ns
    cfg = config(tmp_path, ["readings"], replay_window_h=1)
    result = collect_landing(cfg, now_ns=landed_ns + 3599 * 10**9)
    assert path.exists() and result.tables[0].in_replay_window == 1
    collect_landing(cfg, now_ns=landed_ns + 3601 * 10**9)
    assert not path.exists()


@pytest.mark.parametrize(
    ("jobs", "note"), [(["alerts", "nosuchjob"], "no witness"), (["devices"], "no configured job")]
)
def test_tables_without_a_proof_are_kept(tmp_path: Path, jobs: list[str], note: str) -> None:
    layout = DataLayout(tmp_path)
    path = land(layout, T0)
    readings_keys(layout, [("d-0", T0), ("d-1", T0 + 1000), ("d-2", T0 + 2000)])
    result = collect_landing(config(tmp_path, jobs))
    assert path.exists()
    assert note in (result.tables[0].note or "")


def test_replay_window_must_not_be_negative() -> None:
    with pytest.raises(ValidationError, match="replay_window_h"):
        CityConfig.model_validate({"site": "s", "landing": {"replay_window_h": -1}})
