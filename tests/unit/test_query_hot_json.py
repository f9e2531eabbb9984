"""The latest route's lean JSON is byte for byte the body its models write."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from citylake.services.query import hot_json
from citylake.services.query.models import DeviceLatest, LatestReading, Reading, ReadingsPage

ROWS: list[dict[str, object]] = [
    {"metric": "level", "ts": datetime(2026, 12, 1, 8, 0, 0, 123000, UTC), "value": 2.5,
     "text": None, "unit": "m", "quality": 0},
    {"metric": "state", "ts": datetime(2026, 12, 1, 8, 0, 1, tzinfo=UTC), "value": None,
     "text": "open \u95f8\u95e8 \"quoted\"", "unit": None, "quality": 2},
    {"metric": "tiny", "ts": datetime(1999, 1, 1, tzinfo=UTC), "value": 1e-300,
     "text": None, "unit": "\u00b5g/m\u00b3", "quality": 1},
    {"metric": "big", "ts": datetime(2026, 12, 1, 23, 59, 59, 999000, UTC), "value": -1.7976931348623157e308,
     "text": None, "unit": "", "quality": 0},
]  # fmt: skip


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], []])
def test_lean_body_equals_the_models_body(rows: list[dict[str, object]]) -> None:
    model = DeviceLatest(device_id="dev-\u4e00", readings=[LatestReading.model_validate(r) for r in rows])
    assert hot_json.device_latest("dev-\u4e00", rows) == model.model_dump_json().encode()


@pytest.mark.parametrize("next_cursor", [None, "abc.def"])
@pytest.mark.parametrize("rows", [ROWS, []])
def test_lean_readings_page_equals_the_models_body(
    rows: list[dict[str, object]], next_cursor: str | None
) -> None:
    model = ReadingsPage(
        device_id="dev-\u4e00", items=[Reading.model_validate(r) for r in rows], next_cursor=next_cursor
    )
    assert hot_json.readings_page("dev-\u4e00", rows, next_cursor) == model.model_dump_json().encode()
