"""``/healthz`` and ``/metrics`` for every service."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def add_health_and_metrics(
    app: FastAPI,
    registry: CollectorRegistry,
    checks: Callable[[], dict[str, str]],
    guard: Callable[..., None],
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
