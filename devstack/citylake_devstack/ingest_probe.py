"""Reading a running `citylake ingest` process from outside, through its
`--metrics-port` endpoint: what demos, benches and tests wait on."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from citylake_devstack.metrics_text import scrape, total


@dataclass(frozen=True)
class IngestProbe:
    port: int

    def healthy(self) -> bool:
        """True once every source is up (MQTT: connected and subscribed)."""
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def landed_rows(self, table: str = "readings") -> float:
        """Rows of ``table`` committed to landing so far (0 while unreachable)."""
        with httpx.Client() as client:
            found = scrape(f"http://127.0.0.1:{self.port}/metrics", client)
        return total(found, "citylake_ingest_landed_rows_total", table=table)
