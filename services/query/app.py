"""The query service: latest values, ranges and analyst SQL over the lake.

``create_app(settings)`` builds the app; the lake connection is opened in the
lifespan and reached by handlers through dependencies (services/query/deps.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI
from prometheus_client import CollectorRegistry

from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake.services.auth import api_key_guard
from citylake.services.observability import add_health_and_metrics
from citylake.services.query import routes


@dataclass(frozen=True)
class QuerySettings:
    data_dir: Path
    api_keys: list[str] = field(default_factory=list)


def create_app(settings: QuerySettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.lake = Lake(DataLayout(settings.data_dir))
        try:
            yield
        finally:
            app.state.lake.close()

    app = FastAPI(
        title="citylake query",
        version="1",
        summary="Latest values, time ranges and SQL over the city's data lake",
        lifespan=lifespan,
    )
    guard = api_key_guard(settings.api_keys)
    app.include_router(routes.router, dependencies=[Depends(guard)])
    registry = CollectorRegistry()

    def checks() -> dict[str, str]:
        lake = getattr(app.state, "lake", None)
        return {"lake": "ok" if lake is not None else "not open"}

    add_health_and_metrics(app, registry, checks, guard)
    return app
