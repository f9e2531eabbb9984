"""Arrow schemas of every citylake table: the contract all floors share.

A table's schema changes only with a new ``SCHEMA_VERSION``; every Parquet file
citylake writes carries the version in its metadata (``citylake.schema_version``)
so a reader can tell old files from new ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

import pyarrow as pa

# 2: `devices` gained `district` (a place name, as a device reports it) and
# `attributes` (JSON text: what a source knows of a device beyond the columns).
# 3: `readings_1m` and `readings_1h` gained `site` (the site whose readings a
# row rolls up), so a receiver can tell two sites' rows of one window apart.
SCHEMA_VERSION = 3
SCHEMA_VERSION_KEY = b"citylake.schema_version"
TABLE_NAME_KEY = b"citylake.table"

_TS = pa.timestamp("ms", tz="UTC")
_DICT_STR = pa.dictionary(pa.int32(), pa.string())


class Quality(IntEnum):
    """`readings.quality`: how far a value can be trusted."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class EventKind(StrEnum):
    """`device_events.kind`."""

    REGISTER = "register"
    UNREGISTER = "unregister"
    KEEPALIVE = "keepalive"
    ONLINE = "online"
    OFFLINE = "offline"
    CATALOG = "catalog"
    ALARM = "alarm"
    POSITION = "position"
    STATUS = "status"


@dataclass(frozen=True)
class TableSpec:
    """One table: its Arrow schema, the columns that must not be null, and how it
    is partitioned in the lake."""

    name: str
    schema: pa.Schema
    required: tuple[str, ...]
    time_column: str | None
    description: str
    # Columns a later schema version added: files written before lack them and
    # every reader (views, compaction, the serving store) reads them as NULL.
    added: tuple[str, ...] = ()

    def with_metadata(self) -> pa.Schema:
        """The schema with citylake's version metadata, as written to Parquet."""
        return self.schema.with_metadata(
            {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_NAME_KEY: self.name.encode()}
        )


READINGS = TableSpec(
    name="readings",
    schema=pa.schema(
        [
            pa.field("device_id", _DICT_STR, nullable=False),
            pa.field("ts", _TS, nullable=False),
            pa.field("metric", _DICT_STR, nullable=False),
            pa.field("value", pa.float64()),
            pa.field("text", pa.string()),
            pa.field("unit", _DICT_STR),
            pa.field("quality", pa.uint8(), nullable=False),
            pa.field("source", _DICT_STR, nullable=False),
            pa.field("site", _DICT_STR, nullable=False),
            pa.field("ingest_ts", _TS, nullable=False),
        ]
    ),
    required=("device_id", "ts", "metric", "quality", "source", "site", "ingest_ts"),
    time_column="ts",
    description="one measured value",
)

_ROLLUP_SCHEMA = pa.schema(
    [
        pa.field("device_id", _DICT_STR, nullable=False),
        pa.field("metric", _DICT_STR, nullable=False),
        pa.field("window_start", _TS, nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("min", pa.float64()),
        pa.field("max", pa.float64()),
        pa.field("avg", pa.float64()),
        pa.field("last", pa.float64()),
        # The site whose readings the row rolls up (version 3; NULL in older
        # files). Not required: a site's files from before it still ship.
        pa.field("site", _DICT_STR),
    ]
)

READINGS_1M = TableSpec(
    "readings_1m",
    _ROLLUP_SCHEMA,
    ("device_id", "metric", "window_start", "count"),
    "window_start",
    "per device, metric and minute",
    added=("site",),
)
READINGS_1H = TableSpec(
    "readings_1h",
    _ROLLUP_SCHEMA,
    ("device_id", "metric", "window_start", "count"),
    "window_start",
    "per device, metric and hour",
    added=("site",),
)

DEVICE_EVENTS = TableSpec(
    name="device_events",
    schema=pa.schema(
        [
            pa.field("device_id", _DICT_STR, nullable=False),
            pa.field("ts", _TS, nullable=False),
            pa.field("kind", _DICT_STR, nullable=False),
            # JSON text rather than an Arrow map: Flink's Parquet reader, DuckDB
            # and pandas all read a string column the same way.
            pa.field("attributes", pa.string()),
            pa.field("source", _DICT_STR, nullable=False),
            pa.field("site", _DICT_STR, nullable=False),
            pa.field("ingest_ts", _TS, nullable=False),
        ]
    ),
    required=("device_id", "ts", "kind", "source", "site", "ingest_ts"),
    time_column="ts",
    description="one device event",
)

DEVICES = TableSpec(
    name="devices",
    schema=pa.schema(
        [
            pa.field("device_id", pa.string(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("type", pa.string()),
            pa.field("protocol", pa.string()),
            pa.field("manufacturer", pa.string()),
            pa.field("model", pa.string()),
            pa.field("parent_id", pa.string()),
            pa.field("civil_code", pa.string()),
            # The district as its source names it (an MQTT topic level, a
            # configured device's key); civil_code holds the GB/T 2260 code.
            pa.field("district", pa.string()),
            pa.field("address", pa.string()),
            pa.field("longitude", pa.float64()),
            pa.field("latitude", pa.float64()),
            pa.field("status", pa.string()),
            # JSON text, as in device_events: the other named levels of an MQTT
            # topic, a catalog item's extra fields.
            pa.field("attributes", pa.string()),
            pa.field("first_seen", _TS),
            pa.field("last_seen", _TS),
        ]
    ),
    required=("device_id",),
    time_column=None,
    description="one device, latest state",
)

ALERTS = TableSpec(
    name="alerts",
    schema=pa.schema(
        [
            pa.field("alert_id", pa.string(), nullable=False),
            pa.field("device_id", pa.string(), nullable=False),
            pa.field("metric", pa.string()),
            pa.field("rule", pa.string(), nullable=False),
            pa.field("severity", pa.string(), nullable=False),
            pa.field("started_at", _TS, nullable=False),
            pa.field("ended_at", _TS),
            pa.field("value", pa.float64()),
            pa.field("message", pa.string()),
        ]
    ),
    required=("alert_id", "device_id", "rule", "severity", "started_at"),
    time_column="started_at",
    description="one alert",
)

REJECTED = TableSpec(
    name="rejected",
    schema=pa.schema(
        [
            pa.field("source", _DICT_STR, nullable=False),
            pa.field("received_at", _TS, nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            # Truncated to REJECTED_RAW_LIMIT bytes: enough to diagnose, never
            # enough for a hostile sender to fill the disk.
            pa.field("raw", pa.binary()),
        ]
    ),
    required=("source", "received_at", "reason"),
    time_column="received_at",
    description="one rejected input",
)

REJECTED_RAW_LIMIT = 4096

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (READINGS, READINGS_1M, READINGS_1H, DEVICE_EVENTS, DEVICES, ALERTS, REJECTED)
}


def table(name: str) -> TableSpec:
    """The spec of table ``name``; raises ``KeyError`` naming the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known tables: {', '.join(TABLES)}") from None
