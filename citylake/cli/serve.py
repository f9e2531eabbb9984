"""``citylake serve <service>``: run one microservice (Dapr sidecar optional)."""

from __future__ import annotations

import os
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, fail, load, setup_logging
from citylake.config import LoadedConfig, ServiceConfig
from citylake.services.allocator import map_large_blocks

if TYPE_CHECKING:
    from fastapi import FastAPI

    from citylake.services.sidecar import SidecarAddress


class ServiceName(StrEnum):
    query = "query"
    registry = "registry"
    alerts = "alerts"


def serve(
    service: Annotated[ServiceName, typer.Argument(help="which service")],
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="listen address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from config)")] = None,
    dapr_http_port: Annotated[
        int | None,
        typer.Option(
            envvar="DAPR_HTTP_PORT",
            min=1,
            max=65535,
            help="the Dapr sidecar's HTTP port (registry, alerts): state and pub/sub go through it and "
            "/healthz reports it; unset, alerts keeps its state in <data_dir>/state/ and events in memory",
        ),
    ] = None,
    allow_open: Annotated[
        bool,
        typer.Option(
            "--allow-open",
            help="serve without keys off loopback (the network in front is trusted); "
            "the same as services.<name>.allow_open",
        ),
    ] = False,
) -> None:
    """Serve a microservice over HTTP; pair it with `daprd --app-port <port>` for Dapr."""
    setup_logging()
    loaded = load(config)
    _refuse_if_open(loaded, service, host, allow_open)
    sidecar = _sidecar(dapr_http_port)
    if service is ServiceName.registry:
        app, settings = _registry(loaded, sidecar)
    elif service is ServiceName.alerts:
        app, settings = _alerts(loaded, sidecar)
    else:
        from citylake.services.query.app import QuerySettings, create_app

        settings = loaded.config.services.query
        app = create_app(QuerySettings(data_dir=loaded.config.data_dir, config=settings))
    # Before the first request: the hot tier's merges must not grow the heap for good.
    map_large_blocks()
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="warning")


def _refuse_if_open(loaded: LoadedConfig, service: ServiceName, host: str | None, allow_open: bool) -> None:
    from citylake.config.exposure import OpenBindRefused, check_exposure
    from citylake.services.auth import KeyFileError, service_keys

    settings: ServiceConfig = getattr(loaded.config.services, service.value)
    try:
        ring = service_keys(settings.api_keys, settings.read_keys, settings.keys_file)
        check_exposure(
            f"citylake serve {service.value}",
            host or settings.host,
            protected=not ring.open,
            allow_open=allow_open or settings.allow_open,
            how_to_protect=f"services.{service.value}.api_keys / read_keys / keys_file",
        )
    except (OpenBindRefused, KeyFileError) as exc:
        fail(str(exc))


def _sidecar(http_port: int | None) -> SidecarAddress | None:
    from citylake.services.sidecar import SidecarAddress

    # DAPR_API_TOKEN is how Dapr hands an app the token its sidecar requires.
    return SidecarAddress(http_port, api_token=os.environ.get("DAPR_API_TOKEN")) if http_port else None


def _registry(loaded: LoadedConfig, sidecar: SidecarAddress | None) -> tuple[FastAPI, ServiceConfig]:
    from citylake.services.registry.app import RegistrySettings, create_app
    from citylake.services.registry.configured import configured_devices, source_protocols

    settings = loaded.config.services.registry
    app = create_app(
        RegistrySettings(
            data_dir=loaded.config.data_dir,
            api_keys=list(settings.api_keys),
            read_keys=list(settings.read_keys),
            keys_file=settings.keys_file,
            configured=tuple(configured_devices(loaded)),
            source_protocols=source_protocols(loaded),
            sidecar=sidecar,
        )
    )
    return app, settings


def _alerts(loaded: LoadedConfig, sidecar: SidecarAddress | None) -> tuple[FastAPI, ServiceConfig]:
    from citylake.services.alerts.app import AlertsSettings, create_app

    settings = loaded.config.services.alerts
    app = create_app(
        AlertsSettings(
            data_dir=loaded.config.data_dir,
            api_keys=list(settings.api_keys),
            read_keys=list(settings.read_keys),
            keys_file=settings.keys_file,
            seed_rules=tuple(loaded.config.pipelines.alerts),
            sidecar=sidecar,
            # APP_ID is set beside the sidecar by Dapr's injector; it names the events' source.
            app_id=os.environ.get("APP_ID", "alerts"),
            embedded_state_path=loaded.config.data_dir / "state" / "alerts.sqlite",
        )
    )
    return app, settings
