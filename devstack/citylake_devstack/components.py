"""The real components citylake runs against, started on free local ports.

Used by ``citylake demo`` and by the test fixtures, so both start mosquitto,
daprd and Flink the same way. Every starter raises ``ComponentUnavailable``
naming the missing binary or the busy port.
"""

from __future__ import annotations

import getpass
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from citylake.site.daprd import SidecarPorts, daprd_argv, daprd_env
from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port, require_port_free

REPO_ROOT = Path(__file__).resolve().parents[2]
DAPR_COMPONENTS = REPO_ROOT / "deploy" / "dapr" / "components"
DAPR_CONFIG = REPO_ROOT / "deploy" / "dapr" / "config.yaml"


def _binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ComponentUnavailable(f"{name} not found on PATH; {hint}")
    return found


@dataclass
class Mosquitto:
    process: ManagedProcess
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"


def start_mosquitto(
    workdir: Path,
    port: int | None = None,
    queue_qos0: bool = False,
    listener_config: str = "",
    extra_settings: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> Mosquitto:
    """A mosquitto broker on 127.0.0.1 with persistence, sized for ingest that
    acknowledges only after its landing write: the default in-flight window of
    20 QoS 1 messages per client would stall a batching subscriber.
    ``extra_settings`` are more mosquitto.conf lines (a deployment's bounds);
    ``prefix`` goes before the command (ManagedProcess)."""
    binary = Path("/usr/sbin/mosquitto") if Path("/usr/sbin/mosquitto").exists() else None
    exe = str(binary) if binary else _binary("mosquitto", "install Debian's mosquitto (make setup)")
    port = port or free_port()
    require_port_free(port, "mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    settings = [
        f"listener {port} 127.0.0.1",
        listener_config.strip() or "allow_anonymous true",
        # As root mosquitto would drop to user "mosquitto", which cannot read the
        # test's files (persistence, certificates) in private temporary folders.
        f"user {getpass.getuser()}",
        "persistence true",
        f"persistence_location {workdir}/",
        "autosave_interval 1",
        "max_inflight_messages 0",
        "max_queued_messages 1000000",
        "message_size_limit 10485760",
        f"queue_qos0_messages {'true' if queue_qos0 else 'false'}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        *extra_settings,
    ]
    conf.write_text("\n".join(settings) + "\n")
    process = ManagedProcess(
        "mosquitto", [exe, "-c", str(conf)], workdir / "mosquitto.log", prefix=prefix
    ).start()
    process.wait_port(port, 15)
    return Mosquitto(process, port, tls="certfile" in listener_config)


def daprd_binary() -> Path:
    from citylake.pipelines.jars import cache_dir

    path = cache_dir() / "bin" / "daprd"
    if not path.exists():
        raise ComponentUnavailable(
            f"daprd not found at {path}; run `make setup` (tools/setup/daprd.sh builds it)"
        )
    return path


@dataclass
class Daprd:
    process: ManagedProcess
    app_id: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def invoke_url(self, app_id: str, method: str) -> str:
        return f"{self.http_url}/v1.0/invoke/{app_id}/method/{method.lstrip('/')}"


def start_daprd(
    app_id: str,
    app_port: int,
    workdir: Path,
    mqtt_url: str,
    components: Path = DAPR_COMPONENTS,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    config: Path | None = DAPR_CONFIG,
) -> Daprd:
    """A daprd sidecar in self-hosted mode with the project's component files
    and Configuration, started as ``citylake run`` starts one
    (citylake/site/daprd.py). ``env`` adds variables (e.g. ``GOMEMLIMIT``, as
    the deploy's ``dapr.io/env``), ``args`` flags (e.g. ``--enable-profiling``)."""
    ports = SidecarPorts(free_port(), free_port(), free_port(), free_port())
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [*daprd_argv(daprd_binary(), app_id, app_port, ports, components, config), *args]
    env = {**daprd_env(mqtt_url, workdir / "state.db"), **(env or {})}
    process = ManagedProcess(
        f"daprd[{app_id}]", argv, workdir / f"daprd-{app_id}.log", env=env, prefix=prefix
    ).start()

    def healthy() -> bool:
        try:
            outbound = httpx.get(f"http://127.0.0.1:{ports.http}/v1.0/healthz/outbound", timeout=1)
            return outbound.status_code == 204
        except httpx.HTTPError:
            return False

    process.wait_until(healthy, 60, "outbound health")
    return Daprd(process, app_id, ports.http, ports.grpc, ports.metrics)


def start_service(
    service: str,
    config_path: Path,
    port: int,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> ManagedProcess:
    """``citylake serve <service>`` as a child process, waited for on /healthz.
    ``env`` adds variables, e.g. ``DAPR_HTTP_PORT`` to put the service beside a sidecar."""
    argv = [
        sys.executable,
        "-m",
        "citylake",
        "serve",
        service,
        "--config",
        str(config_path),
        "--port",
        str(port),
    ]
    require_port_free(port, f"citylake {service}")
    process = ManagedProcess(
        f"citylake-{service}", argv, workdir / f"{service}.log", env=env, prefix=prefix
    ).start()

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_until(healthy, 60, "/healthz")
    return process
