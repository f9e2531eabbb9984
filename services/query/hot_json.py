"""JSON bodies of hot-tier answers, written straight from the tier's rows.

The latest route's JSON used to go rows -> Arrow table -> Python dicts ->
pydantic models -> JSON: ~0.8 ms of CPU (measured, bench/bench_services.py's
latest row at 10k devices) around a lookup of ~0.1 ms, in the service's one
process. The rows are already plain values the tier produced, so they need no
validation on the way out: orjson writes them as the models would (the same
keys in the same order, instants as UTC milliseconds with ``Z``), and a unit
test holds the two bodies equal. Arrow, and every lake answer, still go
through the table and the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson

from citylake.services.query.models import iso_ms


def _reading(row: dict[str, object]) -> dict[str, object]:
    ts = row["ts"]
    assert isinstance(ts, datetime)
    return {
        "metric": row["metric"],
        "ts": iso_ms(ts),
        "value": row["value"],
        "text": row["text"],
        "unit": row["unit"],
        "quality": row["quality"],
    }


def device_latest(device_id: str, rows: Sequence[dict[str, object]]) -> bytes:
    """The body of ``DeviceLatest(device_id, readings=rows)``."""
    return orjson.dumps({"device_id": device_id, "readings": [_reading(r) for r in rows]})


def readings_page(device_id: str, rows: Sequence[dict[str, object]], next_cursor: str | None) -> bytes:
    """The body of ``ReadingsPage(device_id, items=rows, next_cursor)``: a day
    of one device is 1,440 rows, and validating each through pydantic only to
    write it out again was most of the route's CPU (the store's query ~2 ms)."""
    items = [
        {
            "ts": iso_ms(r["ts"]) if isinstance(r["ts"], datetime) else r["ts"],
            "metric": r["metric"],
            "value": r["value"],
            "text": r["text"],
            "unit": r["unit"],
            "quality": r["quality"],
        }
        for r in rows
    ]
    return orjson.dumps({"device_id": device_id, "items": items, "next_cursor": next_cursor})
