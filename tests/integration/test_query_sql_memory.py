"""The string-memory attack on analyst SQL, against `citylake serve query` as
deployed: ``SELECT repeat('x', 1000000) FROM range(2048)`` builds 2 GB of
strings in one DuckDB vector, past DuckDB's memory_limit. The service
process's peak RSS must stay far below that, the query's worker below its
``sql_memory_mb``, the query must be refused with a reason, and the service
must go on answering typed and SQL requests meanwhile and after."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from citylake_devstack import ComponentUnavailable, free_port, start_service
from tests.query_lake import build_lake

pytestmark = pytest.mark.integration

ATTACK = "SELECT repeat('x', 1000000) FROM range(2048)"
WORKER_MB = 768
# The service holds FastAPI, DuckDB with the lake's views and pyarrow
# (about 150 MiB idle); the attack's 2 GB must not reach it.
SERVICE_PEAK_MB = 400


def _rss_mb(pid: int) -> tuple[int, int]:
    """Resident and peak resident (VmHWM) MiB of ``pid``; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def _children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[str, int]]:
    build_lake(tmp_path / "data")
    config = tmp_path / "city.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "test-site",
                "data_dir": str(tmp_path / "data"),
                "sources": [],
                "services": {"query": {"sql_memory_mb": WORKER_MB, "memory_limit_mb": 256}},
            }
        )
    )
    port = free_port()
    try:
        process = start_service("query", config, port, tmp_path)
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start the query service: {exc}", pytrace=False)
    with process:
        yield f"http://127.0.0.1:{port}", process.pid


def test_a_string_bomb_neither_grows_the_service_nor_stops_it(service: tuple[str, int]) -> None:
    url, pid = service
    with httpx.Client(base_url=url, timeout=120) as http:
        assert http.post("/v1/sql", json={"sql": "SELECT 1"}).status_code == 200  # a worker is up
        peaks = {"service": 0, "worker": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peaks["service"] = max(peaks["service"], _rss_mb(pid)[0])
                for child in _children(pid):
                    peaks["worker"] = max(peaks["worker"], _rss_mb(child)[1])
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        answers: list[int] = []

        def others() -> None:
            while not done.is_set():
                answers.append(http.get("/v1/devices/air-1/latest").status_code)
                time.sleep(0.1)

        typed = threading.Thread(target=others)
        typed.start()
        try:
            started = time.monotonic()
            attack = http.post("/v1/sql", json={"sql": ATTACK})
            elapsed = time.monotonic() - started
        finally:
            done.set()
            sampler.join()
            typed.join()
        assert attack.status_code == 400, attack.text
        assert attack.json()["limit"] == "sql_memory_mb"
        assert f"{WORKER_MB} MiB" in attack.json()["detail"]
        # Shown with -s: the figures services/README.md quotes.
        sys.stdout.write(
            f"attack refused in {elapsed:.1f} s; peak RSS: service {peaks['service']} MiB, "
            f"worker {peaks['worker']} MiB\n"
        )
        assert 0 < peaks["service"] < SERVICE_PEAK_MB, peaks
        assert peaks["worker"] <= WORKER_MB, peaks
        assert answers and set(answers) == {200}, answers  # typed routes answered all along
        again = http.post("/v1/sql", json={"sql": "SELECT count(*) FROM readings"})
        assert again.status_code == 200, again.text
        assert http.get("/healthz").status_code == 200
