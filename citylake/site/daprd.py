"""How a daprd sidecar is started beside an app: the one place its flags live
(the dev stack and ``citylake run`` both build their command lines here)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


class DaprdNotFound(RuntimeError):
    """No daprd binary: the message says where citylake looked."""


def find_daprd(configured: Path | None) -> Path:
    """``configured``, else ``daprd`` on PATH, else Dapr's own install folder."""
    candidates = [configured] if configured else []
    on_path = shutil.which("daprd")
    candidates += [Path(on_path)] if on_path else []
    candidates.append(Path.home() / ".dapr" / "bin" / "daprd")
    for candidate in candidates:
        if candidate is not None and candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    looked = ", ".join(str(c) for c in candidates if c is not None)
    raise DaprdNotFound(
        f"daprd not found (looked at {looked}); set run.sidecars.daprd in city.yaml "
        "(in a checkout `make setup` builds it into .cache/bin/daprd)"
    )


@dataclass(frozen=True)
class SidecarPorts:
    http: int
    grpc: int
    internal_grpc: int
    metrics: int


def daprd_argv(
    binary: Path,
    app_id: str,
    app_port: int | None,
    ports: SidecarPorts,
    resources_path: Path,
    config: Path | None = None,
) -> list[str]:
    """Self-hosted mode on 127.0.0.1 with the given components and, if given,
    the sidecars' Configuration (deploy/dapr/config.yaml: without it daprd
    labels HTTP metrics by full path, a series per device). No placement or
    scheduler: citylake uses neither actors nor jobs. ``app_port`` None is a
    sidecar for a client-only app (ingest publishes, nothing calls it)."""
    argv = [str(binary), "--mode", "standalone", "--app-id", app_id]
    if app_port is not None:
        argv += ["--app-port", str(app_port), "--app-protocol", "http", "--app-channel-address", "127.0.0.1"]
    if config is not None:
        argv += ["--config", str(config)]
    return [
        *argv,
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--dapr-http-port",
        str(ports.http),
        "--dapr-grpc-port",
        str(ports.grpc),
        "--dapr-internal-grpc-port",
        str(ports.internal_grpc),
        "--metrics-port",
        str(ports.metrics),
        "--resources-path",
        str(resources_path),
        "--placement-host-address",
        "",
        "--scheduler-host-address",
        "",
        "--log-level",
        "info",
    ]


def daprd_env(mqtt_url: str | None, state_db: Path) -> dict[str, str]:
    """What the project's component files read through the env secret store."""
    env = {"CITYLAKE_DAPR_STATE_DB": f"file:{state_db}"}
    if mqtt_url:
        env["CITYLAKE_MQTT_URL"] = mqtt_url.replace("mqtt://", "tcp://")
    return env
