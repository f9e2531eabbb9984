"""The query service: latest values, ranges and analyst SQL over the lake.

``create_app(settings)`` builds the app; the lake connection, locked down to
reading the lake (services/query/sandbox.py), is opened at start if it can be
and otherwise on first use, and reached by handlers through dependencies
(services/query/deps.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import duckdb
from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from citylake.config import ServiceConfig
from citylake.schemas import DataLayout
from citylake.services.auth import install_keys, service_keys
from citylake.services.lakeaccess import LakeUnavailable
from citylake.services.observability import RequestMetrics, add_health_and_metrics
from citylake.services.query import aggregate, dashboard, history, latest, sql
from citylake.services.query.body_limit import BodySizeLimit
from citylake.services.query.concurrency import ConcurrencyLimit
from citylake.services.query.errors import install_error_handlers
from citylake.services.query.hot_tier import HotTier, HotTierBounds
from citylake.services.query.live import keep_hot, subscription_router
from citylake.services.query.registry_cache import RegistryCache
from citylake.services.query.sandbox import Limits, SandboxedLake
from citylake.services.query.sql_pool import SqlWorkers
from citylake.services.query.store import StoreBounds, StoreKeeper, open_store


@dataclass(frozen=True)
class QuerySettings:
    """Where the lake is, and ``services.query`` of city.yaml (keys, limits)."""

    data_dir: Path
    config: ServiceConfig = field(default_factory=ServiceConfig)


def start_store(
    app: FastAPI, layout: DataLayout, lake: SandboxedLake, config: ServiceConfig
) -> StoreKeeper | None:
    """The serving store, opened and kept up with the lake in a thread (None: off or held elsewhere)."""
    if config.serving_days == 0:
        return None
    bounds = StoreBounds(
        days=config.serving_days,
        minute_days=config.serving_1m_days,
        max_rows=config.serving_max_rows,
        memory_limit_mb=config.serving_memory_mb,
        threads=config.duckdb_threads,
    )
    store = open_store(layout, lake.snapshot, bounds)
    if store is None:
        return None
    app.state.store = store
    return StoreKeeper(store, config.serving_refresh_s).start()


def create_app(settings: QuerySettings) -> FastAPI:
    config = settings.config
    # Absolute, so the sandbox's allowed directory and the views' file paths
    # agree whatever the working directory is when a query runs.
    layout = DataLayout(settings.data_dir.absolute())

    lake = SandboxedLake(
        layout,
        Limits(
            memory_limit_mb=config.memory_limit_mb,
            threads=config.duckdb_threads,
            temp_dir=layout.data_dir / "tmp" / "query" / str(os.getpid()),
            temp_max_mb=config.sql_temp_max_mb,
        ),
    )
    registry = CollectorRegistry()
    # Analyst SQL runs in worker processes under a hard memory limit; the
    # typed routes run here, on the service's own statements.
    workers = SqlWorkers(layout.data_dir, config, registry)

    bounds = HotTierBounds(
        max_devices=config.hot_max_devices,
        max_metrics=config.hot_max_metrics,
        max_units=config.hot_max_units,
        max_window_rows=config.hot_max_window_rows,
    )
    hot = HotTier(timedelta(seconds=config.hot_window_s), bounds) if config.live_pubsub else None
    app_token = os.environ.get("APP_API_TOKEN") or None
    ring = service_keys(config.api_keys, config.read_keys, config.keys_file)
    if hot is not None and not ring.open and app_token is None:
        raise ValueError(
            "services.query has api_keys and a live feed: set APP_API_TOKEN (for daprd and the service) "
            "so the subscription route is guarded too"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with contextlib.suppress(LakeUnavailable, duckdb.Error):
            lake.cursor().close()  # opened now if it can be; else /healthz and requests say why
        async with contextlib.AsyncExitStack() as stack:
            # Unwound last in, first out: the store stops following the lake before it closes.
            stack.callback(lake.close)
            stack.callback(workers.close)
            if hot is not None:
                await stack.enter_async_context(keep_hot(hot, lake))
            keeper = await run_in_threadpool(start_store, app, layout, lake, config)
            if keeper is not None:
                stack.callback(keeper.close)
            yield

    app = FastAPI(
        title="citylake query",
        version="1",
        summary="Latest values, time ranges and SQL over the city's data lake",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.lake = lake
    app.state.hot = hot
    app.state.registry = RegistryCache(lake)  # a district's devices, for the hot tier's answer
    app.state.sql_workers = workers
    # Nothing here writes: the read scope opens every route (SQL is read-only).
    guard = install_keys(app, ring)
    for router in (
        latest.router(config),
        history.router(config),
        aggregate.router(config),
        sql.router(config, workers),
        dashboard.router(config, layout),
    ):
        app.include_router(router, dependencies=[Depends(guard)])
    # Unguarded: the page holds neither data nor a key (services/query/dashboard/page.py).
    app.include_router(dashboard.page_router())
    install_error_handlers(app)
    if hot is not None and config.live_pubsub is not None:
        app.include_router(
            subscription_router(hot, config.live_pubsub, config.live_topic, app_token, registry)
        )
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes)
    app.add_middleware(ConcurrencyLimit, max_requests=config.max_concurrent_requests, registry=registry)
    # Added last, so outermost: refusals by the body limit are timed too.
    app.add_middleware(RequestMetrics, registry=registry)

    def checks() -> dict[str, str]:
        try:
            lake.cursor().close()  # what a request would do first: open, refresh the views
        except (LakeUnavailable, duckdb.Error) as exc:
            results = {"lake": str(exc)}
        else:
            results = {"lake": "ok"}
        if hot is not None:
            results["hot_tier"] = "ok" if hot.ready else "rebuilding from the lake"
        return results

    add_health_and_metrics(app, registry, checks, guard)
    return app
