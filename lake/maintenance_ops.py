"""``/healthz`` and Prometheus ``/metrics`` for ``citylake lake maintain``.

The standard library's threaded HTTP server rather than FastAPI and uvicorn:
two read-only routes beside a process whose work is synchronous, and a few
MiB less on the edge node.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from citylake.lake.maintenance import MaintenanceScheduler


class _SchedulerCollector(Collector):
    def __init__(self, scheduler: MaintenanceScheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        health = self.scheduler.health()["tasks"]
        assert isinstance(health, dict)
        rounds = CounterMetricFamily("citylake_maintenance_rounds", "maintenance rounds run", labels=["task"])
        failures = CounterMetricFamily(
            "citylake_maintenance_failures", "rounds with a failed action", labels=["task"]
        )
        since = GaugeMetricFamily(
            "citylake_maintenance_seconds_since_ok", "seconds since the last good round", labels=["task"]
        )
        totals = CounterMetricFamily(
            "citylake_maintenance_done", "what the task did (files, rows, bytes)", labels=["task", "what"]
        )
        for name, task in health.items():
            rounds.add_metric([name], task["rounds"])
            failures.add_metric([name], task["failures"])
            if task["seconds_since_ok"] is not None:
                since.add_metric([name], task["seconds_since_ok"])
            for what, value in task["totals"].items():
                totals.add_metric([name, what], value)
        yield from (rounds, failures, since, totals)


class MaintenanceOpsServer:
    """Serves the scheduler's health and metrics on a thread until ``close``."""

    def __init__(self, scheduler: MaintenanceScheduler, host: str, port: int) -> None:
        registry = CollectorRegistry()
        registry.register(_SchedulerCollector(scheduler))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    health = scheduler.health()
                    body = json.dumps(health).encode()
                    self._reply(200 if health["status"] == "ok" else 503, "application/json", body)
                elif self.path == "/metrics":
                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                else:
                    self._reply(404, "text/plain", b"not found: /healthz and /metrics are served here\n")

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # probes every few seconds would drown the action lines

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="maintenance-ops", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
