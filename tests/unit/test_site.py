"""citylake run: the units a config plans, and the supervisor's restarts,
health and stop, on real child processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from citylake.config import SiteRunConfig, load_config
from citylake.site import Supervisor, UnitState, plan_site
from citylake.site.daprd import DaprdNotFound
from citylake.site.health import serve_health
from citylake.site.logs import BoundedLog
from citylake.site.units import SitePlan, Unit, UnitKind, free_port
from tests.waiting import wait_for

FAST = SiteRunConfig(restart_initial_s=0.1, restart_max_s=0.4, stable_after_s=30, stop_timeout_s=1.0)


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(
        f"""
site: north
data_dir: {tmp_path / "data"}
sources:
  - name: sensors
    type: mqtt
    url: mqtt://127.0.0.1:1883
    topics: [{{template: "city/{{device_id}}/telemetry"}}]
pipelines:
  jobs: [readings, rollups, alerts]
{extra}
"""
    )
    return path


def _fake_daprd(tmp_path: Path) -> Path:
    daprd = tmp_path / "daprd"
    daprd.write_text("#!/bin/sh\nexit 0\n")
    daprd.chmod(0o755)
    return daprd


def test_plan_runs_what_the_config_names_with_sidecars_after_their_apps(tmp_path: Path) -> None:
    daprd = _fake_daprd(tmp_path)
    path = _config(
        tmp_path,
        f"""
ingest: {{live_pubsub: citylake-pubsub}}
services: {{query: {{port: 0}}, registry: {{port: 0}}, alerts: {{port: 0}}}}
run:
  services: [query, registry, alerts]
  sidecars:
    enabled: true
    daprd: {daprd}
    resources_path: {tmp_path}
    config: {tmp_path / "dapr-config.yaml"}
    mqtt_url: "mqtt://127.0.0.1:1883"
""",
    )
    plan = plan_site(load_config(path), path, python="py")
    names = [u.name for u in plan.units]
    assert names == [
        "daprd-ingest",
        "ingest",
        "jobs",
        "maintenance",
        "query",
        "daprd-query",
        "registry",
        "daprd-registry",
        "alerts",
        "daprd-alerts",
    ]
    query, sidecar = plan.unit("query"), plan.unit("daprd-query")
    assert query.argv[:5] == ("py", "-m", "citylake", "serve", "query")
    # The service reaches its own sidecar; the sidecar calls the service's port.
    dapr_port = query.env["DAPR_HTTP_PORT"]
    assert sidecar.argv[sidecar.argv.index("--dapr-http-port") + 1] == dapr_port
    service_port = query.argv[query.argv.index("--port") + 1]
    assert sidecar.argv[sidecar.argv.index("--app-port") + 1] == service_port
    assert sidecar.env["CITYLAKE_MQTT_URL"] == "tcp://127.0.0.1:1883"
    # Every sidecar with the site's Configuration (HTTP metrics by route template).
    for unit in plan.units:
        if unit.kind is UnitKind.SIDECAR:
            assert unit.argv[unit.argv.index("--config") + 1] == str(tmp_path / "dapr-config.yaml")
    assert "--app-port" not in plan.unit("daprd-ingest").argv  # ingest only publishes
    assert plan.unit("ingest").env["DAPR_HTTP_PORT"] == plan.endpoints["dapr-ingest"].rsplit(":", 1)[1]
    # The site's jobs as ONE Flink job (one mini-cluster JVM)...
    assert plan.unit("jobs").argv[3:7] == ("pipeline", "run", "readings,rollups,alerts", "--mode")
    # ...whose alerts follow the rules of the site's own alerts service.
    assert plan.unit("jobs").argv[-2:] == ("--rules-from", plan.endpoints["alerts"])
    assert plan.unit("alerts").argv[-1] == plan.endpoints["alerts"].rsplit(":", 1)[1]


def test_plan_runs_a_unit_per_job_when_told_not_to_combine(tmp_path: Path) -> None:
    path = _config(tmp_path, "  combine: false\nservices: {alerts: {port: 0}}\nrun: {services: [alerts]}")
    plan = plan_site(load_config(path), path, python="py")
    jobs = [u for u in plan.units if u.kind is UnitKind.JOB]
    assert [u.name for u in jobs] == ["job-readings", "job-rollups", "job-alerts"]
    assert plan.unit("job-rollups").argv[3:7] == ("pipeline", "run", "rollups", "--mode")
    assert plan.unit("job-alerts").argv[-2:] == ("--rules-from", plan.endpoints["alerts"])
    assert "--rules-from" not in plan.unit("job-readings").argv


def test_plan_without_daprd_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    path = _config(tmp_path, f"run: {{sidecars: {{enabled: true, resources_path: {tmp_path}}}}}")
    with pytest.raises(DaprdNotFound, match=r"run\.sidecars\.daprd"):
        plan_site(load_config(path), path)


def _plan(*units: Unit) -> SitePlan:
    return SitePlan("test", units, {})


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_a_unit_that_dies_is_restarted_with_a_doubling_backoff(tmp_path: Path) -> None:
    crash = Unit("crash", UnitKind.JOB, _python("import sys; sys.exit(3)"))
    supervisor = Supervisor(_plan(crash), tmp_path / "logs", FAST)
    supervisor.start()
    backoffs: list[float] = []
    try:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and supervisor.units["crash"].restarts < 4:
            supervisor.tick()
            status = supervisor.units["crash"]
            if status.state is UnitState.BACKOFF and (not backoffs or backoffs[-1] != status.backoff_s):
                backoffs.append(status.backoff_s)
            time.sleep(0.02)
    finally:
        supervisor.stop()
    status = supervisor.units["crash"]
    assert status.restarts >= 4 and status.last_exit == 3
    assert backoffs[:3] == [0.1, 0.2, 0.4] and max(backoffs) == 0.4  # doubling, capped
    assert "starting crash" in (tmp_path / "logs" / "crash.log").read_text()


def test_health_follows_the_unit_and_the_site_view_says_so(tmp_path: Path) -> None:
    port = free_port()
    web = Unit(
        "web",
        UnitKind.SERVICE,
        (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "-d", str(tmp_path)),
        health_url=f"http://127.0.0.1:{port}/",
    )
    supervisor = Supervisor(_plan(web), tmp_path / "logs", FAST)
    health_port = free_port()
    server = serve_health(supervisor, "127.0.0.1", health_port)
    supervisor.start()
    try:
        wait_for(lambda: supervisor.units["web"].state is UnitState.HEALTHY, 30, "healthy web unit")
        view = httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5)
        assert view.status_code == 200 and view.json()["units"]["web"]["state"] == "healthy"
        first_pid = view.json()["units"]["web"]["pid"]
        os.kill(first_pid, signal.SIGKILL)

        def restarted() -> bool:
            supervisor.tick()
            return supervisor.units["web"].restarts == 1

        wait_for(restarted, 30, "a restart")
        assert httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5).status_code in (200, 503)
        wait_for(lambda: supervisor.units["web"].state is UnitState.HEALTHY, 30, "healthy again")
        view = httpx.get(f"http://127.0.0.1:{health_port}/healthz", timeout=5).json()
        assert view["units"]["web"]["pid"] != first_pid and view["units"]["web"]["restarts"] == 1
        metrics = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=5).text
        assert 'citylake_site_unit_restarts_total{unit="web"} 1.0' in metrics
        assert 'citylake_site_unit_healthy{unit="web"} 1.0' in metrics
    finally:
        supervisor.stop()
        server.shutdown()


def test_a_failing_health_check_is_reported_unhealthy(tmp_path: Path) -> None:
    sleeper = Unit(
        "sleeper", UnitKind.SERVICE, _python("import time; time.sleep(60)"), health_url="http://127.0.0.1:9/"
    )
    supervisor = Supervisor(_plan(sleeper), tmp_path / "logs", FAST)
    supervisor.start()
    try:
        time.sleep(3)
        assert supervisor.units["sleeper"].state is UnitState.STARTING
        assert not supervisor.health()["healthy"]
    finally:
        supervisor.stop()


def test_stop_kills_what_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    stubborn = Unit(
        "stubborn",
        UnitKind.JOB,
        _python(
            "import signal, subprocess, sys, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            f"open({str(pidfile)!r}, 'w').write(str(child.pid))\n"
            "time.sleep(120)\n"
        ),
    )
    supervisor = Supervisor(_plan(stubborn), tmp_path / "logs", FAST)
    supervisor.start()
    wait_for(pidfile.exists, 20, "the grandchild's pid")
    child = int(pidfile.read_text())
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started < FAST.stop_timeout_s + 5
    assert supervisor.units["stubborn"].state is UnitState.STOPPED
    wait_for(lambda: _zombie(child), 10, "the grandchild gone")


def _zombie(pid: int) -> bool:
    """Gone or a zombie: ended either way."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_unit_logs_are_bounded(tmp_path: Path) -> None:
    log = BoundedLog(tmp_path / "unit.log", max_bytes=1000)
    for _ in range(50):
        log.write(b"x" * 100)
    log.close()
    assert (tmp_path / "unit.log").stat().st_size < 1000
    assert (tmp_path / "unit.log.1").stat().st_size >= 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unit.log", "unit.log.1"]


def test_the_health_view_is_json_with_endpoints(tmp_path: Path) -> None:
    supervisor = Supervisor(SitePlan("s", (), {"query": "http://x"}), tmp_path, FAST)
    assert json.loads(json.dumps(supervisor.health()))["endpoints"] == {"query": "http://x"}
