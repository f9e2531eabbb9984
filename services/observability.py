"""``/healthz`` and ``/metrics`` for every service."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def add_health_and_metrics(
    app: FastAPI,
    registry: CollectorRegistry,
    checks: Callable[[], dict[str, str]],
    guard: Callable[..., object],
) -> None:
    """``/healthz`` is open (probes carry no keys); ``/metrics`` is guarded."""

    @app.get("/healthz", tags=["ops"], summary="Liveness and readiness")
    def healthz(response: Response) -> dict[str, object]:
        results = checks()
        healthy = all(v == "ok" for v in results.values())
        response.status_code = 200 if healthy else 503
        return {"status": "ok" if healthy else "degraded", "checks": results}

    guarded = APIRouter(dependencies=[Depends(guard)])

    @guarded.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(guarded)


# The method label takes only these values: the method is the client's to
# choose (and is read before auth), so an open set would let anyone grow the
# series without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


# Millisecond answers are the point of the services, so the buckets are fine
# below a second and coarse above it.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    """ASGI middleware: a latency histogram per route template, method and status.

    Labelled by the route's template (``/v1/devices/{device_id}/latest``), not
    the raw path, so a hundred thousand devices make one series, not 100k;
    unmatched paths share the label ``unmatched`` for the same reason.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request to the end of the response, per route",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before responding
        started = time.perf_counter()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.latency.labels(method_label(scope["method"]), template, str(status)).observe(
                time.perf_counter() - started
            )
