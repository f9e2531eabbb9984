"""Instants and time ranges in query parameters: ISO 8601 with a time zone.

A bare local time is refused rather than guessed: the lake is UTC, the city's
operators often are not, and a silent eight-hour shift is worse than a 422.
Ranges are half-open, ``[from, to)``, so consecutive ranges never overlap.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator

from citylake.services.query.errors import bad_request

EXAMPLE = "2026-11-25T08:00:00Z"


def parse_instant(value: object) -> datetime:
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
    except OverflowError:
        raise ValueError(f"{value!r} is out of the range of instants") from None


# Strings only (no epoch numbers): "ISO 8601" is the contract, and a number's
# unit (s? ms?) is exactly the ambiguity it avoids.
Instant = Annotated[datetime, BeforeValidator(parse_instant)]


def check_range(start: datetime, end: datetime, max_days: float, limit: str) -> None:
    """Raises a 400 naming the problem when ``[start, end)`` is empty or too long."""
    if end <= start:
        raise bad_request(f"`to` ({end.isoformat()}) must be after `from` ({start.isoformat()})")
    if end - start > timedelta(days=max_days):
        raise bad_request(
            f"the range from {start.isoformat()} to {end.isoformat()} is longer than {max_days:g} days; "
            "ask for consecutive shorter ranges",
            limit,
        )
