"""The site's one health view: ``/healthz`` (JSON, 503 until every unit is
healthy) and Prometheus ``/metrics`` (per unit up and restarts)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from citylake.site.supervisor import Supervisor, UnitState


class _UnitCollector:
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self):  # type: ignore[no-untyped-def]
        up = GaugeMetricFamily("citylake_site_unit_healthy", "1 while the unit is healthy", labels=["unit"])
        restarts = CounterMetricFamily("citylake_site_unit_restarts", "restarts since start", labels=["unit"])
        rss = GaugeMetricFamily(
            "citylake_site_unit_rss_bytes", "resident memory of the unit's process tree", labels=["unit"]
        )
        # Unit names come from the site's own config: a closed label set.
        for name, unit in self.supervisor.health()["units"].items():
            up.add_metric([name], 1.0 if unit["state"] == UnitState.HEALTHY else 0.0)
            restarts.add_metric([name], unit["restarts"])
            rss.add_metric([name], unit["rss_mb"] * 2**20)
        yield up
        yield restarts
        yield rss


def serve_health(supervisor: Supervisor, host: str, port: int) -> ThreadingHTTPServer:
    """Started in a daemon thread; ``shutdown()`` stops it."""
    registry = CollectorRegistry()
    registry.register(_UnitCollector(supervisor))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                view = supervisor.health()
                self._send(200 if view["healthy"] else 503, "application/json", json.dumps(view).encode())
            elif self.path == "/metrics":
                self._send(200, "text/plain; version=0.0.4", generate_latest(registry))
            else:
                self._send(404, "text/plain", b"not found: /healthz and /metrics are served here\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would drown the site's log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="site-health-http", daemon=True).start()
    return server
