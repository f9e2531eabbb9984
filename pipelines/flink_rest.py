"""The session cluster's REST API: list, cancel, stop with a savepoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx


class FlinkRestError(RuntimeError):
    pass


@dataclass(frozen=True)
class FlinkRest:
    url: str
    timeout_s: float = 10.0

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = httpx.request(
                method, f"{self.url.rstrip('/')}{path}", timeout=self.timeout_s, **kwargs
            )
        except httpx.HTTPError as exc:
            raise FlinkRestError(f"Flink REST {self.url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise FlinkRestError(f"Flink REST {method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/jobs/overview")["jobs"])

    def state(self, job_id: str) -> str:
        return str(self._call("GET", f"/jobs/{job_id}")["state"])

    def cancel(self, job_id: str) -> None:
        self._call("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})

    def stop_with_savepoint(self, job_id: str, target_uri: str, wait_s: float = 120.0) -> str:
        """Take a savepoint and stop the job; returns the savepoint's location."""
        trigger = self._call(
            "POST", f"/jobs/{job_id}/stop", json={"targetDirectory": target_uri, "drain": False}
        )
        request_id = trigger["request-id"]
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            status = self._call("GET", f"/jobs/{job_id}/savepoints/{request_id}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation") or {}
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "")[:800]
                    raise FlinkRestError(f"savepoint of {job_id} failed: {cause}")
                return str(operation["location"])
            time.sleep(0.5)
        raise FlinkRestError(f"savepoint of {job_id} not finished after {wait_s:.0f}s")
