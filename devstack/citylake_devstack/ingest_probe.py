"""Reading a running `citylake ingest` process from outside, through its
`--metrics-port` endpoint: what demos, benches and tests wait on."""

from __future__ import annotations

from dataclasses import dataclass

import httpx


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
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0.0
        prefix = f'citylake_ingest_landed_rows_total{{table="{table}"}}'
        for line in text.splitlines():
            if line.startswith(prefix):
                return float(line.split()[-1])
        return 0.0
