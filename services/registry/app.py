"""The registry service: devices and their metadata.

``create_app(settings)`` builds the app. The catalog (``catalog.py``) is a
snapshot merged from the lake's ``devices`` and ``device_events`` and the
devices ``city.yaml`` names; it is built before the first request and rebuilt
every ``refresh_s`` in the background. Dapr is needed only to reach the
service (invocation); when a sidecar is configured ``/healthz`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from citylake.schemas import DataLayout
from citylake.services.auth import install_keys, service_keys
from citylake.services.observability import RequestMetrics, add_health_and_metrics
from citylake.services.registry import routes
from citylake.services.registry.catalog import CatalogUnavailable, DeviceCatalog
from citylake.services.registry.configured import ConfiguredDevice
from citylake.services.sidecar import SidecarAddress, sidecar_check
from citylake.services.validation import add_readable_validation_errors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrySettings:
    data_dir: Path
    api_keys: list[str] = field(default_factory=list)  # read and write (the registry only reads)
    read_keys: list[str] = field(default_factory=list)
    keys_file: Path | None = None
    configured: tuple[ConfiguredDevice, ...] = ()
    source_protocols: Mapping[str, str] = field(default_factory=dict)
    refresh_s: float | None = 30.0  # None: only at start (tests refresh by hand)
    sidecar: SidecarAddress | None = None


def create_app(settings: RegistrySettings) -> FastAPI:
    registry = CollectorRegistry()
    refresh_failures = Counter(
        "citylake_registry_refresh_failures", "catalog rebuilds that failed", registry=registry
    )

    async def refresh(catalog: DeviceCatalog) -> None:
        try:
            count = await asyncio.to_thread(catalog.refresh)
        except Exception:  # the refresh loop outlives any one failure; the catalog keeps the reason
            refresh_failures.inc()
            log.exception("registry: catalog refresh failed; serving the previous snapshot")
        else:
            log.debug("registry: %d devices", count)

    async def refresh_forever(catalog: DeviceCatalog, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await refresh(catalog)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalog = DeviceCatalog(DataLayout(settings.data_dir), settings.configured, settings.source_protocols)
        app.state.catalog = catalog
        await refresh(catalog)
        task = None
        if settings.refresh_s is not None:
            task = asyncio.create_task(refresh_forever(catalog, settings.refresh_s), name="registry-refresh")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            catalog.close()

    app = FastAPI(
        title="citylake registry",
        version="1",
        summary="The city's devices: what sources reported, what city.yaml names, first sight",
        lifespan=lifespan,
    )
    add_readable_validation_errors(app)

    @app.exception_handler(CatalogUnavailable)
    async def unavailable(_: Request, exc: CatalogUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    guard = install_keys(app, service_keys(settings.api_keys, settings.read_keys, settings.keys_file))
    app.include_router(routes.router, dependencies=[Depends(guard)])

    add_health_and_metrics(app, registry, _checks(app, settings), guard)
    # Outermost, so refusals (401, 403) are timed and counted too.
    app.add_middleware(RequestMetrics, registry=registry)
    _catalog_gauges(app, registry)
    return app


def _catalog_of(app: FastAPI) -> DeviceCatalog | None:
    return getattr(app.state, "catalog", None)


def _catalog_gauges(app: FastAPI, registry: CollectorRegistry) -> None:
    def devices() -> float:
        catalog = _catalog_of(app)
        return float(catalog.device_count) if catalog else 0.0

    def age() -> float:
        catalog = _catalog_of(app)
        return time.time() - catalog.refreshed_at if catalog and catalog.refreshed_at else 0.0

    Gauge("citylake_registry_devices", "devices in the catalog", registry=registry).set_function(devices)
    Gauge(
        "citylake_registry_snapshot_age_seconds", "time since the catalog was rebuilt", registry=registry
    ).set_function(age)


def _checks(app: FastAPI, settings: RegistrySettings) -> Callable[[], dict[str, str]]:
    def checks() -> dict[str, str]:
        catalog = _catalog_of(app)
        if catalog is None:
            results = {"catalog": "not open"}
        elif catalog.refreshed_at is None:
            results = {"catalog": f"never built: {catalog.last_error}"}
        elif catalog.last_error is not None:
            results = {"catalog": f"stale, last refresh failed: {catalog.last_error}"}
        else:
            results = {"catalog": "ok"}
        if settings.sidecar is not None:
            results["sidecar"] = sidecar_check(settings.sidecar)
        return results

    return checks
