"""The alerts service: alert rules, active and past alerts, alert events.

``create_app(settings)`` builds the app. With a sidecar (``settings.sidecar``)
rules and the memory of published events live in the Dapr state store and
events go out on Dapr pub/sub; without one, an embedded SQLite store and an
in-memory publisher stand in, so the handlers run the same in tests and on a
node without Dapr.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from citylake.config import AlertRule
from citylake.schemas import DataLayout
from citylake.services.alerts import routes
from citylake.services.alerts.events import AlertAnnouncer, AnnouncerMetrics
from citylake.services.alerts.rules import RuleBook, RuleError
from citylake.services.auth import install_keys, service_keys
from citylake.services.lakeaccess import LakeOnDemand, LakeUnavailable
from citylake.services.observability import RequestMetrics, add_health_and_metrics
from citylake.services.publish import DaprPublisher, EmbeddedPublisher, Publisher
from citylake.services.sidecar import DaprSidecar, SidecarAddress, SidecarError, sidecar_check
from citylake.services.state import DaprStateStore, EmbeddedStateStore, StateStore
from citylake.services.validation import add_readable_validation_errors


@dataclass(frozen=True)
class AlertsSettings:
    data_dir: Path
    api_keys: list[str] = field(default_factory=list)  # read and write: may change rules
    read_keys: list[str] = field(default_factory=list)  # read only: a 403 on rule changes
    keys_file: Path | None = None
    seed_rules: tuple[AlertRule, ...] = ()  # city.yaml's pipelines.alerts, shown until the first change
    sidecar: SidecarAddress | None = None
    # Component names of deploy/dapr/components/.
    state_store: str = "citylake-state"
    pubsub: str = "citylake-pubsub"
    topic: str = "alerts"
    app_id: str = "alerts"
    embedded_state_path: Path | None = None  # no sidecar: this SQLite file, or memory if None
    poll_interval_s: float | None = 2.0  # None: no background announcer (tests poll by hand)
    lookback_s: float = 86_400.0


def _stores(settings: AlertsSettings) -> tuple[DaprSidecar | None, StateStore, Publisher]:
    if settings.sidecar is None:
        return None, EmbeddedStateStore(settings.embedded_state_path), EmbeddedPublisher()
    sidecar = DaprSidecar(settings.sidecar)
    return (
        sidecar,
        DaprStateStore(sidecar, settings.state_store),
        DaprPublisher(sidecar, settings.pubsub, source=settings.app_id),
    )


def create_app(settings: AlertsSettings) -> FastAPI:
    registry = CollectorRegistry()
    announcer_metrics = AnnouncerMetrics.register(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lake = LakeOnDemand(DataLayout(settings.data_dir))
        sidecar, store, publisher = _stores(settings)
        app.state.lake = lake
        app.state.store = store
        app.state.publisher = publisher
        app.state.rules = RuleBook(store, settings.seed_rules)
        app.state.announcer = AlertAnnouncer(
            lake, store, publisher, settings.topic, settings.lookback_s, announcer_metrics
        )
        task = None
        if settings.poll_interval_s is not None:
            task = asyncio.create_task(app.state.announcer.run(settings.poll_interval_s), name="alert-events")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await store.aclose()
            if sidecar is not None:
                await sidecar.aclose()
            lake.close()

    app = FastAPI(
        title="citylake alerts",
        version="1",
        summary="Alert rules, active and past alerts; alert events on the `alerts` topic",
        lifespan=lifespan,
    )
    add_readable_validation_errors(app)

    @app.exception_handler(RuleError)
    async def rule_error(_: Request, exc: RuleError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(LakeUnavailable)
    async def lake_unavailable(_: Request, exc: LakeUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(SidecarError)
    async def sidecar_error(_: Request, exc: SidecarError) -> JSONResponse:
        # 503: the rules are fine, their store is out of reach for now; a retry may work.
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # Reading needs the read scope; the rule changes in routes.py add the write scope.
    guard = install_keys(app, service_keys(settings.api_keys, settings.read_keys, settings.keys_file))
    app.include_router(routes.router, dependencies=[Depends(guard)])
    add_health_and_metrics(app, registry, _checks(app, settings), guard)
    # Outermost, so refusals (401, 403) are timed and counted too.
    app.add_middleware(RequestMetrics, registry=registry)
    return app


def _checks(app: FastAPI, settings: AlertsSettings) -> Callable[[], dict[str, str]]:
    def checks() -> dict[str, str]:
        announcer: AlertAnnouncer | None = getattr(app.state, "announcer", None)
        if announcer is None:
            return {"service": "not started"}
        # The lake is opened on demand; the announcer's last poll is what says it can be read.
        results = {
            "events": "ok" if announcer.last_error is None else f"last poll failed: {announcer.last_error}"
        }
        if settings.sidecar is not None:
            results["sidecar"] = sidecar_check(settings.sidecar)
        return results

    return checks
