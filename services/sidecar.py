"""The Dapr sidecar's HTTP API: the one module of the services that knows Dapr.

Everything else sees the ports in ``state.py`` and ``publish.py``; this client
speaks to ``http://127.0.0.1:<DAPR_HTTP_PORT>`` (the port ``dapr run`` and the
Kubernetes sidecar injector give the app), sending ``dapr-api-token`` when the
sidecar requires one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from citylake.services.state import EtagMismatch, StateEntry


class SidecarError(RuntimeError):
    """The sidecar was unreachable or refused a request; the message says which."""


@dataclass(frozen=True)
class SidecarAddress:
    http_port: int
    host: str = "127.0.0.1"
    api_token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"dapr-api-token": self.api_token} if self.api_token else {}


def sidecar_check(address: SidecarAddress, timeout_s: float = 1.0) -> str:
    """``ok`` when the sidecar can make outbound calls (state, pub/sub), else why not.

    Outbound health is the right probe for the app: it does not wait for the app
    itself, so a service asking it during start-up cannot deadlock with daprd."""
    url = f"{address.base_url}/v1.0/healthz/outbound"
    try:
        response = httpx.get(url, headers=address.headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"unreachable at {address.base_url} ({type(exc).__name__})"
    if response.status_code != 204:
        return f"not ready at {address.base_url} (HTTP {response.status_code})"
    return "ok"


class DaprSidecar:
    """Async client of one sidecar. Open it with ``async with`` (or call ``aclose``)."""

    def __init__(self, address: SidecarAddress, timeout_s: float = 5.0) -> None:
        self.address = address
        self._client = httpx.AsyncClient(
            base_url=address.base_url, headers=address.headers, timeout=timeout_s
        )

    async def __aenter__(self) -> DaprSidecar:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def check(self) -> str:
        return sidecar_check(self.address)

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise SidecarError(
                f"Dapr sidecar unreachable at {self.address.base_url} ({type(exc).__name__}: {exc}); "
                "is daprd running with --dapr-http-port matching DAPR_HTTP_PORT?"
            ) from exc

    @staticmethod
    def _refused(what: str, response: httpx.Response) -> SidecarError:
        return SidecarError(f"Dapr sidecar refused {what}: HTTP {response.status_code} {response.text[:300]}")

    async def get_state(self, store: str, key: str) -> StateEntry | None:
        response = await self._request("GET", f"/v1.0/state/{quote(store, safe='')}/{quote(key, safe='')}")
        if response.status_code == 204:  # Dapr's answer for a key that does not exist
            return None
        if response.status_code != 200:
            raise self._refused(f"reading {key!r} from {store!r}", response)
        return StateEntry(response.json(), response.headers.get("etag", ""))

    async def get_bulk_state(self, store: str, keys: Sequence[str]) -> dict[str, StateEntry]:
        found: dict[str, StateEntry] = {}
        if not keys:
            return found
        response = await self._request(
            "POST", f"/v1.0/state/{quote(store, safe='')}/bulk", json={"keys": list(keys), "parallelism": 8}
        )
        if response.status_code != 200:
            raise self._refused(f"a bulk read of {len(keys)} keys from {store!r}", response)
        for item in response.json():
            if "data" in item and "error" not in item:
                found[item["key"]] = StateEntry(item["data"], item.get("etag", ""))
        return found

    async def save_state(
        self,
        store: str,
        key: str,
        value: Any,
        etag: str | None = None,
        create_only: bool = False,
        ttl_s: int | None = None,
    ) -> None:
        item: dict[str, Any] = {"key": key, "value": value}
        if etag is not None:
            item["etag"] = etag
        # first-write makes the store compare ETags; with no ETag it inserts only.
        concurrency = "first-write" if etag is not None or create_only else "last-write"
        item["options"] = {"concurrency": concurrency}
        if ttl_s is not None:
            item["metadata"] = {"ttlInSeconds": str(ttl_s)}
        response = await self._request("POST", f"/v1.0/state/{quote(store, safe='')}", json=[item])
        if response.status_code == 409:
            raise EtagMismatch(f"{key!r} in {store!r} changed since it was read")
        if response.status_code not in (200, 201, 204):
            raise self._refused(f"saving {key!r} to {store!r}", response)

    async def publish(
        self, pubsub: str, topic: str, data: Mapping[str, Any], metadata: Mapping[str, str] | None = None
    ) -> None:
        params = {f"metadata.{k}": v for k, v in (metadata or {}).items()}
        response = await self._request(
            "POST",
            f"/v1.0/publish/{quote(pubsub, safe='')}/{quote(topic, safe='')}",
            json=data,
            params=params,
        )
        if response.status_code not in (200, 204):
            raise self._refused(f"publishing to {pubsub}/{topic}", response)
