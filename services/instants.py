"""How instants leave the services: UTC with milliseconds, as the lake stores them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import PlainSerializer


def iso_ms(value: datetime) -> str:
    """``2025-11-25T12:02:03.456Z``; a naive value is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Instant = Annotated[datetime, PlainSerializer(iso_ms, return_type=str)]


def parse_instant(text: str) -> datetime:
    """An ISO 8601 instant with a zone (``Z`` or an offset), as UTC. A bare local
    time is refused, not guessed: the lake is UTC, operators often are not."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 instant; write e.g. 2026-11-25T08:00:00Z") from None
    if moment.utcoffset() is None:
        raise ValueError(f"{text!r} has no time zone; add Z (UTC) or an offset such as +08:00")
    return moment.astimezone(UTC)
