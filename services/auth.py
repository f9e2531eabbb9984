"""API keys: every route but /healthz needs ``X-API-Key`` when keys are configured."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Header, HTTPException, status


def api_key_guard(keys: Sequence[str]) -> Callable[[str | None], Coroutine[Any, Any, None]]:
    allowed = [k.encode() for k in keys]

    # Async though it never waits: FastAPI runs a sync dependency in a worker
    # thread, a hop that cost more than the hot routes' own work.
    async def guard(x_api_key: str | None = Header(default=None)) -> None:
        if not allowed:
            return
        given = (x_api_key or "").encode()
        # compare_digest against every key: timing does not reveal which matched.
        if not any(hmac.compare_digest(given, key) for key in allowed):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong X-API-Key header; ask the operator for a key",
            )

    return guard
