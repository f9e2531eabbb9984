"""API keys with scopes: every route but /healthz needs ``X-API-Key`` when keys are configured.

Two scopes: ``read`` (every GET, and the query service's read-only SQL) and
``write`` (what changes state: alert rules). A write key may also read. The
keys of a service come from ``services.<name>.api_keys`` (write),
``read_keys`` and ``keys_file`` (a Kubernetes Secret mounted as a file, so no
key sits in the ConfigMap). The key ring lives on ``app.state.key_ring``;
routes name the scope they need with ``Depends(require(Scope.WRITE))``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request, status
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from citylake.config.loader import unexpanded


class Scope(StrEnum):
    READ = "read"
    WRITE = "write"


class KeyFileError(ValueError):
    """A keys file that cannot be read or has a malformed line."""


@dataclass(frozen=True)
class KeyRing:
    """The keys a service accepts, by scope. Empty: the service is open."""

    read: tuple[bytes, ...] = ()
    write: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, write: Iterable[str] = (), read: Iterable[str] = ()) -> KeyRing:
        write, read = list(write), list(read)
        for key in write + read:
            if unexpanded(key) or not key:
                raise KeyFileError(
                    f"an API key is {key!r}: set its environment variable (from the Secret) or remove it"
                )
        return cls(tuple(k.encode() for k in read), tuple(k.encode() for k in write))

    def merged(self, other: KeyRing) -> KeyRing:
        return KeyRing(self.read + other.read, self.write + other.write)

    @property
    def open(self) -> bool:
        return not self.read and not self.write

    def allows(self, given: str | None, scope: Scope) -> bool:
        if self.open:
            return True
        key = (given or "").encode()
        candidates = self.write if scope is Scope.WRITE else self.read + self.write
        # compare_digest against every key, no early exit: timing does not
        # reveal which key matched or in which scope.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(key, candidate)
        return matched


def read_keys_file(path: Path) -> KeyRing:
    """``<scope> <key>`` per line (``#`` comments, blank lines ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyFileError(f"cannot read the keys file {path}: {exc.strerror}") from None
    read: list[str] = []
    write: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        scope, _, key = line.partition(" ")
        key = key.strip()
        if scope not in (Scope.READ, Scope.WRITE) or len(key) < 16 or " " in key:
            raise KeyFileError(
                f"{path}:{number}: expected `read <key>` or `write <key>` with a key of at least "
                "16 characters and no spaces"
            )
        (write if scope == Scope.WRITE else read).append(key)
    return KeyRing.of(write, read)


def service_keys(api_keys: Iterable[str], read_keys: Iterable[str], keys_file: Path | None) -> KeyRing:
    ring = KeyRing.of(api_keys, read_keys)
    return ring.merged(read_keys_file(keys_file)) if keys_file is not None else ring


def ring_of(request: Request) -> KeyRing:
    ring: KeyRing = getattr(request.app.state, "key_ring", KeyRing())
    return ring


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, None]]:
    """A dependency: the request's ``X-API-Key`` must hold ``scope``."""

    # Async though it never waits: FastAPI runs a sync dependency in a worker
    # thread, a hop that cost more than the hot routes' own work.
    async def guard(request: Request, x_api_key: str | None = Header(default=None)) -> None:
        ring = ring_of(request)
        if ring.allows(x_api_key, scope):
            return
        if x_api_key and ring.allows(x_api_key, Scope.READ):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"this key may only read; {request.method} {request.url.path} needs a key "
                "with the write scope",
            )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong X-API-Key header; ask the operator for a key",
        )

    return guard


DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class GuardedDocs:
    """ASGI middleware: with keys, the OpenAPI document and its pages need a
    read key too (they map every route and parameter for an attacker)."""

    def __init__(self, app: ASGIApp, ring: KeyRing) -> None:
        self.app = app
        self.ring = ring

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in DOC_PATHS and not self.ring.open:
            headers = dict(scope["headers"])
            given = headers.get(b"x-api-key", b"").decode("latin-1")
            if not self.ring.allows(given, Scope.READ):
                body = b'{"detail":"missing or wrong X-API-Key header; the API description needs a read key"}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def install_keys(app: FastAPI, ring: KeyRing) -> Callable[..., Coroutine[Any, Any, None]]:
    """Put ``ring`` on the app, guard its docs; returns the read dependency."""
    app.state.key_ring = ring
    app.add_middleware(GuardedDocs, ring=ring)
    return require(Scope.READ)
