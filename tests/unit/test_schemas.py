from __future__ import annotations

import pyarrow as pa
import pytest

from citylake.schemas import SCHEMA_VERSION, TABLES, DataLayout, Quality, table, validate_row
from citylake.schemas.tables import REJECTED_RAW_LIMIT, SCHEMA_VERSION_KEY
from citylake.schemas.validation import truncate_raw

TS = 1_764_072_000_000  # 2025-11-25T12:00:00Z


def reading(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "device_id": "air-1",
        "ts": TS,
        "metric": "pm25",
        "value": 35.2,
        "text": None,
        "unit": "ug/m3",
        "quality": Quality.GOOD.value,
        "source": "mqtt",
        "site": "s1",
        "ingest_ts": TS + 5,
    }
    row.update(overrides)
    return row


def test_every_design_table_has_a_schema() -> None:
    assert set(TABLES) == {
        "readings",
        "readings_1m",
        "readings_1h",
        "device_events",
        "devices",
        "alerts",
        "rejected",
    }
    readings = table("readings").schema
    assert readings.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert readings.field("device_id").type == pa.dictionary(pa.int32(), pa.string())
    assert readings.field("quality").type == pa.uint8()


def test_written_schema_carries_version() -> None:
    meta = table("readings").with_metadata().metadata
    assert meta[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode()


def test_unknown_table_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known tables: readings"):
        table("reading")


def test_valid_reading_passes() -> None:
    assert validate_row(table("readings"), reading()) is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"ts": None}, "readings.ts: missing (required)"),
        ({"ts": "2025-11-25"}, "readings.ts: expected epoch milliseconds (int), got str"),
        ({"ts": 1_764_072_000}, "readings.ts: timestamp 1764072000 ms is outside 2000..2100"),
        ({"value": "35"}, "readings.value: expected a number, got str '35'"),
        ({"value": float("nan")}, "readings.value: expected a finite number, got nan"),
        ({"value": True}, None),
        ({"quality": 7}, None),
        ({"quality": 300}, "readings.quality: 300 does not fit uint8"),
        ({"device_id": 12}, "readings.device_id: expected text, got int 12"),
        ({"text": "x" * 5000}, "readings.text: text of 5000 chars exceeds 4096"),
        ({"colour": "red"}, "readings.colour: not a column of this table"),
    ],
)
def test_invalid_readings_name_column_and_problem(overrides: dict[str, object], expected: str | None) -> None:
    error = validate_row(table("readings"), reading(**overrides))
    if expected is None:
        assert error is None
    else:
        assert error is not None
        assert str(error).startswith(expected)


def test_raw_is_truncated_for_rejected() -> None:
    assert len(truncate_raw(b"x" * (REJECTED_RAW_LIMIT * 3))) == REJECTED_RAW_LIMIT


def test_layout_paths(tmp_path: object) -> None:
    layout = DataLayout(tmp_path)  # type: ignore[arg-type]
    assert layout.lake_glob(table("readings")).endswith("lake/readings/date=*/part-*")
    assert layout.lake_glob(table("devices")).endswith("lake/devices/part-*")
    assert str(layout.landing(table("rejected"))).endswith("landing/rejected")
