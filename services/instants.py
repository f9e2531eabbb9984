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


# A response field: serialised as UTC with milliseconds (`iso_ms`).
UtcInstant = Annotated[datetime, PlainSerializer(iso_ms, return_type=str)]


EXAMPLE = "2026-11-25T08:00:00Z"


def parse_instant(value: object) -> datetime:
    """An ISO 8601 instant with a zone (``Z`` or an offset), as UTC. A bare local
    time is refused, not guessed: the lake is UTC, operators often are not."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 instant; write e.g. {EXAMPLE}") from None
    else:
        raise ValueError(f"expected an ISO 8601 instant such as {EXAMPLE}")
    if moment.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone; add Z (UTC) or an offset such as +08:00")
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 has no UTC instant
        raise ValueError(f"{value!r} is out of the range of instants") from None
