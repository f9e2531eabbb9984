"""The ingest process's own HTTP endpoint: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from citylake.ingest.runner import IngestRunner


def create_ops_app(runner: IngestRunner) -> FastAPI:
    app = FastAPI(title="citylake ingest", version="1", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz(response: Response) -> dict[str, object]:
        health = runner.health()
        response.status_code = 200 if health["status"] == "ok" else 503
        return health

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(runner.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
