"""What a site runs, planned from its config: one ``Unit`` per child command."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from citylake.config import LoadedConfig, PipelinesConfig
from citylake.pipelines.catalog import job_catalog
from citylake.site.daprd import SidecarPorts, daprd_argv, daprd_env, find_daprd


class UnitKind(StrEnum):
    INGEST = "ingest"
    JOB = "job"
    MAINTENANCE = "maintenance"
    SYNC = "sync"
    SERVICE = "service"
    SIDECAR = "sidecar"


@dataclass(frozen=True)
class Unit:
    """One supervised child: a ``citylake`` command or a daprd."""

    name: str
    kind: UnitKind
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    # Polled for 200 (or 204); None: a unit is healthy while it runs.
    health_url: str | None = None


@dataclass(frozen=True)
class SitePlan:
    site: str
    units: tuple[Unit, ...]
    # Where a person or a test reaches the site: service URLs and sidecars' HTTP APIs.
    endpoints: Mapping[str, str]

    def unit(self, name: str) -> Unit:
        for unit in self.units:
            if unit.name == name:
                return unit
        raise KeyError(f"no unit {name!r}; planned: {', '.join(u.name for u in self.units)}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local(host: str) -> str:
    """Where the site's own health checks reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def plan_site(
    loaded: LoadedConfig,
    config_path: Path,
    python: str = sys.executable,
    pick_port: Callable[[], int] = free_port,
) -> SitePlan:
    """The units of this site, in start order (sidecars before their apps'
    first request needs them; stop runs the list backwards)."""
    config = loaded.config
    run = config.run
    cfg = str(config_path)
    base: tuple[str, ...] = (python, "-m", "citylake")
    units: list[Unit] = []
    endpoints: dict[str, str] = {}
    sidecars = run.sidecars
    daprd = find_daprd(sidecars.daprd) if sidecars.enabled else None
    if sidecars.enabled and sidecars.resources_path is None:
        raise ValueError("run.sidecars.enabled needs run.sidecars.resources_path (the Dapr component files)")
    state_dir = config.data_dir / "state"

    def sidecar(app_id: str, app_port: int | None) -> dict[str, str]:
        """Plans app_id's daprd; returns the env its app needs to reach it."""
        assert daprd is not None and sidecars.resources_path is not None
        ports = SidecarPorts(pick_port(), pick_port(), pick_port(), pick_port())
        argv = daprd_argv(
            daprd,
            app_id,
            app_port,
            ports,
            sidecars.resources_path.resolve(),
            sidecars.config.resolve() if sidecars.config else None,
        )
        env = daprd_env(sidecars.mqtt_url, (state_dir / f"dapr-{app_id}.db").resolve())
        health = f"http://127.0.0.1:{ports.http}/v1.0/healthz/outbound"
        units.append(Unit(f"daprd-{app_id}", UnitKind.SIDECAR, tuple(argv), env, health))
        endpoints[f"dapr-{app_id}"] = f"http://127.0.0.1:{ports.http}"
        return {"DAPR_HTTP_PORT": str(ports.http), "DAPR_GRPC_PORT": str(ports.grpc)}

    if any(s.enabled for s in config.sources):
        port = run.ingest_metrics_port or pick_port()
        env = sidecar("ingest", None) if daprd and config.ingest.live_pubsub else {}
        argv: tuple[str, ...] = (*base, "ingest", "--config", cfg, "--metrics-port", str(port))
        units.append(Unit("ingest", UnitKind.INGEST, argv, env, f"http://127.0.0.1:{port}/healthz"))
        endpoints["ingest"] = f"http://127.0.0.1:{port}"

    service_ports = {name: getattr(config.services, name).port or pick_port() for name in run.services}
    alerts_url = None
    if "alerts" in service_ports and config.pipelines.alerts_from is None:
        # The site's own alerts service holds the rules its API changes.
        alerts_url = f"http://{_local(config.services.alerts.host)}:{service_ports['alerts']}"
    _known_jobs(loaded, config_path)
    units.extend(_job_units(config.pipelines, base, cfg, alerts_url))

    if run.maintenance:
        units.append(Unit("maintenance", UnitKind.MAINTENANCE, (*base, "lake", "maintain", "--config", cfg)))

    if run.sync_serve:
        port = config.sync.port or pick_port()
        argv = (*base, "sync", "serve", "--config", cfg, "--port", str(port))
        url = f"http://{_local(config.sync.host)}:{port}"
        units.append(Unit("sync-serve", UnitKind.SYNC, argv, {}, f"{url}/healthz"))
        endpoints["sync-serve"] = url
    if config.sync.region_url:
        units.append(Unit("sync-push", UnitKind.SYNC, (*base, "sync", "push", "--follow", "--config", cfg)))

    for name in run.services:
        settings = getattr(config.services, name)
        port = service_ports[name]
        url = f"http://{_local(settings.host)}:{port}"
        env = sidecar(name, port) if daprd else {}
        argv = (*base, "serve", name, "--config", cfg, "--port", str(port))
        units.append(Unit(name, UnitKind.SERVICE, argv, env, f"{url}/healthz"))
        endpoints[name] = url
    return SitePlan(config.site, _sidecars_after_apps(units), endpoints)


def _known_jobs(loaded: LoadedConfig, config_path: Path) -> None:
    """The one list of jobs (pipelines/catalog.py): a name neither built in
    nor in pipelines.user_jobs fails the plan, not a child minutes later."""
    jobs = loaded.config.pipelines.jobs
    if jobs:
        job_catalog(loaded.config, config_path, loaded.document).job_set(jobs)


def _job_units(
    pipelines: PipelinesConfig, base: tuple[str, ...], cfg: str, alerts_url: str | None
) -> list[Unit]:
    """Combined: one unit ``jobs``, one Flink job in one mini-cluster JVM for
    the whole set (a JVM per job took 3-4.5 GB each at 100k devices);
    otherwise ``job-<name>`` each."""
    groups = (
        [("jobs", pipelines.jobs)]
        if pipelines.combine and len(pipelines.jobs) > 1
        else [(f"job-{job}", [job]) for job in pipelines.jobs]
    )
    units = []
    for unit_name, jobs in groups:
        argv = (*base, "pipeline", "run", ",".join(jobs), "--mode", "streaming", "--config", cfg)
        if "alerts" in jobs and alerts_url is not None:
            argv = (*argv, "--rules-from", alerts_url)
        units.append(Unit(unit_name, UnitKind.JOB, argv))
    return units


def _sidecars_after_apps(units: list[Unit]) -> tuple[Unit, ...]:
    """A service's sidecar is planned before it (so its env is known) but
    starts after it: daprd probes its app's port when it starts. Ingest's
    sidecar has no app port and goes first, so publishing works at once."""
    ordered = [u for u in units if u.kind is not UnitKind.SIDECAR or u.name == "daprd-ingest"]
    for unit in units:
        if unit.kind is UnitKind.SIDECAR and unit.name != "daprd-ingest":
            app = unit.name.removeprefix("daprd-")
            ordered.insert(next(i for i, u in enumerate(ordered) if u.name == app) + 1, unit)
    return tuple(ordered)
