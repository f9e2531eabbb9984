"""A bound on the requests the query service serves at once.

Every client route counts (the typed /v1 routes, SQL, the dashboard's data):
past ``max_concurrent_requests`` a request is answered 429 at once, before it
takes a thread or a DuckDB cursor, so a flood cannot pile up threads, memory
or queued work. Probes (/healthz, /metrics) and the Dapr sidecar's delivery
of the live feed are not counted: they must get through when clients flood.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from citylake.services.query.errors import ErrorBody

EXEMPT = ("/healthz", "/metrics", "/dapr/", "/live/")


class ConcurrencyLimit:
    def __init__(self, app: ASGIApp, max_requests: int, registry: CollectorRegistry) -> None:
        self.app = app
        self.max_requests = max_requests
        # Only touched on the event loop's thread, so a plain int needs no lock.
        self.in_flight = 0
        self.gauge = Gauge(
            "citylake_query_requests_in_flight", "Client requests being served now", registry=registry
        )
        self.refused = Counter(
            "citylake_query_requests_refused_busy",
            "Client requests answered 429 because max_concurrent_requests were being served",
            registry=registry,
        )
        self.body = (
            ErrorBody(
                detail=f"{max_requests} requests are already being served; retry shortly",
                limit="max_concurrent_requests",
            )
            .model_dump_json()
            .encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(EXEMPT):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_requests:
            self.refused.inc()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": self.body})
            return
        self.in_flight += 1
        self.gauge.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.gauge.set(self.in_flight)
