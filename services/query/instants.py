"""Instants and time ranges in query parameters: ISO 8601 with a time zone.

A bare local time is refused rather than guessed: the lake is UTC, the city's
operators often are not, and a silent eight-hour shift is worse than a 422.
Ranges are half-open, ``[from, to)``, so consecutive ranges never overlap.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BeforeValidator

from citylake.services.instants import EXAMPLE, parse_instant
from citylake.services.query.errors import bad_request

__all__ = ["EXAMPLE", "InstantParam", "check_range", "parse_instant"]

# Strings only (no epoch numbers): "ISO 8601" is the contract, and a number's
# unit (s? ms?) is exactly the ambiguity it avoids.
# A query parameter: parsed from ISO 8601 with a zone (`parse_instant`).
InstantParam = Annotated[datetime, BeforeValidator(parse_instant)]


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
