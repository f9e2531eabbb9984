"""``citylake serve <service>``: run one microservice (Dapr sidecar optional)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
import uvicorn

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, load, not_implemented, setup_logging


class ServiceName(StrEnum):
    query = "query"
    registry = "registry"
    alerts = "alerts"


def serve(
    service: Annotated[ServiceName, typer.Argument(help="which service")],
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="listen address (default from config)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default from config)")] = None,
) -> None:
    """Serve a microservice over HTTP; pair it with `daprd --app-port <port>` for Dapr."""
    setup_logging()
    loaded = load(config)
    if service is not ServiceName.query:
        not_implemented(f"serve {service.value}", 6)
    from citylake.services.query.app import QuerySettings, create_app

    settings = loaded.config.services.query
    app = create_app(QuerySettings(data_dir=loaded.config.data_dir, api_keys=list(settings.api_keys)))
    uvicorn.run(app, host=host or settings.host, port=port or settings.port, log_level="warning")
