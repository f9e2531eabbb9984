"""Alert rules created through the alerts API take effect in the running
streaming `alerts` job: the real alerts service beside a real daprd (the
project's SQLite state store component), `citylake pipeline run alerts
--mode streaming --rules-from <service>` on Flink's mini-cluster, and
readings landed live by ingest's landing writer. Also: a site without rules
runs the job idle, in streaming and in batch mode."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow.dataset as ds
import pytest
import yaml

from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.schemas import DataLayout, table
from citylake_devstack import Daprd, Mosquitto, free_port, start_service
from citylake_devstack.process import CITYLAKE, ManagedProcess

pytestmark = pytest.mark.integration


def alert_rows(data_dir: Path) -> list[dict[str, Any]]:
    """Committed lake rows (Flink's in-progress files start with a dot)."""
    files = [str(p) for p in (data_dir / "lake" / "alerts").rglob("part-*")]
    if not files:
        return []
    dataset = ds.dataset(files, format="parquet", partitioning=ds.partitioning(flavor="hive"))
    return list(dataset.to_table().to_pylist())


class LiveFeed:
    """Lands a file of readings stamped with the wall clock every ``period_s``,
    as ingest does for live devices: boiler-1's temp and meter-1's hum."""

    def __init__(self, data_dir: Path, period_s: float = 0.3) -> None:
        self.layout = DataLayout(data_dir)
        self.period_s = period_s
        self.hum = 85.0
        self.first_ts_ms: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-feed", daemon=True)

    def _run(self) -> None:
        writer = LandingWriter(self.layout)
        while not self._stop.is_set():
            now_ms = int(time.time() * 1000)
            self.first_ts_ms = self.first_ts_ms or now_ms
            batcher = ColumnBatcher(table("readings"))
            for device, metric, value in (("boiler-1", "temp", 95.0), ("meter-1", "hum", self.hum)):
                batcher.append({
                    "device_id": device, "ts": now_ms, "metric": metric, "value": value, "text": None,
                    "unit": None, "quality": 0, "source": "feed", "site": "test-site", "ingest_ts": now_ms,
                })  # fmt: skip
            writer.write(table("readings"), batcher.take()[0])
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> LiveFeed:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def alert_id(rule: str, device: str, metric: str, started_ms: int) -> str:
    return hashlib.md5(f"{rule}|{device}|{metric}|{started_ms}".encode()).hexdigest()


@pytest.mark.parametrize("reached_by", ["url", "dapr-app-id"])
def test_a_rule_created_through_the_api_fires_in_the_running_job(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    city_config: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    reached_by: str,
) -> None:
    """``url``: `pipelines.alerts_from` is the service's URL. ``dapr-app-id``:
    `--rules-from alerts`, through a sidecar's service invocation."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flink = {"parallelism": 1, "checkpoint_interval_s": 1, "monitor_interval_s": 0.3, "allowed_lateness_s": 0}
    following = {"alerts_from": base} if reached_by == "url" else {}
    config = city_config(pipelines={"flink": flink, "alerts_poll_s": 0.5, **following})
    data_dir = tmp_path / "data"
    sidecar = daprd_factory("alerts", port, mosquitto.url)
    env = {"DAPR_HTTP_PORT": str(sidecar.http_port)}
    job_log = tmp_path / "alerts-job.log"
    job = ManagedProcess(
        "alerts-job",
        [*CITYLAKE, "pipeline", "run", "alerts", "--mode", "streaming", "--config", str(config)]
        + ([] if reached_by == "url" else ["--rules-from", "alerts"]),
        job_log,
        # The console log unwrapped, for the waits on its lines; the app id is
        # invoked through the service's own sidecar (one per node in a site).
        env={"COLUMNS": "400", **({} if reached_by == "url" else env)},
    )
    feed = LiveFeed(data_dir)
    with start_service("alerts", config, port, tmp_path, env=env), job.start():
        assert httpx.get(f"{base}/v1/rules", timeout=10).json()["rules"] == []
        job.wait_until(
            lambda: "running (Flink job" in job_log.read_text(errors="replace"), 300, "an idle job"
        )
        # Live from here, as devices are: a backlog (landed while the JVM
        # started) is read in no particular order, which with no allowed
        # lateness would test lateness rather than rules.
        with feed:
            time.sleep(3)  # the idle job reads what lands meanwhile and writes nothing
            assert alert_rows(data_dir) == []

            created = httpx.post(
                f"{base}/v1/rules", json={"name": "humid", "metric": "hum", "above": 80}, timeout=10
            )
            assert created.status_code == 201, created.text
            humid_at = time.time()
            lines = job_log.read_text(errors="replace").count("running (Flink job")
            job.wait_until(
                lambda: any(r["rule"] == "humid" for r in alert_rows(data_dir)), 180, "a humid alert"
            )
            humid_latency = time.time() - humid_at

            # A second rule while humid's alert is open: the job re-plans again.
            created = httpx.post(
                f"{base}/v1/rules",
                json={"name": "hot", "metric": "temp", "above": 90, "severity": "critical"},
                timeout=10,
            )
            assert created.status_code == 201, created.text
            hot_at = time.time()
            # Each re-plan is a new Flink job; the first one came up before `hot`.
            assert lines == 1 and job_log.read_text(errors="replace").count("running (Flink job") >= 2
            job.wait_until(lambda: any(r["rule"] == "hot" for r in alert_rows(data_dir)), 180, "a hot alert")
            hot_latency = time.time() - hot_at

            feed.hum = 50.0  # humid's alert closes, in the job re-planned for `hot`
            job.wait_until(
                lambda: any(r["rule"] == "humid" and r["ended_at"] is not None for r in alert_rows(data_dir)),
                120,
                "humid's closing row",
            )
    figures = {"api_to_first_alert_s": {"humid": round(humid_latency, 1), "hot": round(hot_latency, 1)}}
    (tmp_path / "alert-rule-latency.json").write_text(json.dumps(figures))
    with capsys.disabled():
        sys.stdout.write(f"\nalert rule latency ({reached_by}): {json.dumps(figures)}\n")

    rows = alert_rows(data_dir)
    humid = [r for r in rows if r["rule"] == "humid"]
    hot = [r for r in rows if r["rule"] == "hot"]
    # One humid episode across the re-plan: its open state came through the
    # savepoint. A job that lost it would open a second alert at its first
    # reading after the restart; one that read the landing again would not
    # write the same rows once.
    assert len({r["alert_id"] for r in humid}) == 1, humid
    assert sorted(r["ended_at"] is None for r in humid) == [False, True], humid
    started_ms = int(humid[0]["started_at"].timestamp() * 1000)
    assert humid[0]["alert_id"] == alert_id("humid", "meter-1", "hum", started_ms)
    # A rule watches what the job reads after it took effect: readings the idle
    # job had read (the feed ran for 3 s before the rule) are not read again.
    assert feed.first_ts_ms is not None and started_ms > feed.first_ts_ms + 2000
    assert [(r["device_id"], r["severity"], r["value"], r["ended_at"]) for r in hot] == [
        ("boiler-1", "critical", 95.0, None)
    ]
    log = job_log.read_text(errors="replace")
    source = base if reached_by == "url" else f"127.0.0.1:{sidecar.http_port}/v1.0/invoke/alerts/method"
    assert (
        f"following the alert rules of the alerts service at http://{source.removeprefix('http://')}" in log
    )
    assert log.count("re-planning the job") == 2 and "stop with a savepoint failed" not in log
    assert len(list((data_dir / "savepoints" / "alerts").glob("*/_metadata"))) == 2


def test_a_site_without_rules_runs_the_batch_job_to_zero_alerts(city_config: Callable[..., Path]) -> None:
    config = city_config()
    data_dir = Path(str(config.parent / "data"))
    batcher = ColumnBatcher(table("readings"))
    batcher.append({
        "device_id": "boiler-1", "ts": 1_764_072_000_000, "metric": "temp", "value": 95.0, "text": None,
        "unit": None, "quality": 0, "source": "feed", "site": "test-site", "ingest_ts": 1_764_072_000_000,
    })  # fmt: skip
    LandingWriter(DataLayout(data_dir)).write(table("readings"), batcher.take()[0])
    done = subprocess.run(
        [*CITYLAKE, "pipeline", "run", "alerts", "--mode", "batch", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "400"},
    )
    said = done.stdout + done.stderr  # the console writes to stderr
    assert done.returncode == 0, said
    assert "no alert rules in pipelines.alerts of" in said and "done: 0 alert rows (no rules)" in said, said
    assert alert_rows(data_dir) == []


def test_without_an_alerts_service_the_job_follows_city_yaml(
    city_config: Callable[..., Path], tmp_path: Path
) -> None:
    """No `alerts_from`: the rules are city.yaml's, and an edit of the file
    reaches the running job the same way a change in the service does."""
    flink = {"parallelism": 1, "checkpoint_interval_s": 1, "monitor_interval_s": 0.3, "allowed_lateness_s": 0}
    hot = {"name": "hot", "metric": "temp", "above": 90}
    config = city_config(pipelines={"flink": flink, "alerts": [hot], "alerts_poll_s": 0.5})
    data_dir = tmp_path / "data"
    job_log = tmp_path / "alerts-job.log"
    job = ManagedProcess(
        "alerts-job",
        [*CITYLAKE, "pipeline", "run", "alerts", "--mode", "streaming", "--config", str(config)],
        job_log,
        env={"COLUMNS": "400"},
    )
    with job.start():
        # The feed starts with the job: a backlog read in no particular order
        # would, with no allowed lateness, be a test of lateness instead.
        job.wait_until(lambda: "running (Flink job" in job_log.read_text(errors="replace"), 300, "the job")
        with LiveFeed(data_dir):
            job.wait_until(lambda: any(r["rule"] == "hot" for r in alert_rows(data_dir)), 180, "a hot alert")
            humid = {"name": "humid", "metric": "hum", "above": 80}
            document = yaml.safe_load(config.read_text())
            document["pipelines"]["alerts"].append(humid)
            config.write_text(yaml.safe_dump(document, sort_keys=False))
            job.wait_until(lambda: any(r["rule"] == "humid" for r in alert_rows(data_dir)), 180, "humid")
    rows = alert_rows(data_dir)
    assert "following the alert rules of pipelines.alerts of" in job_log.read_text(errors="replace")
    # hot's episode went on through the re-plan: one alert, still open.
    assert len({r["alert_id"] for r in rows if r["rule"] == "hot"}) == 1
    assert {r["device_id"] for r in rows if r["rule"] == "humid"} == {"meter-1"}
