"""The device catalog: one row per device, merged from three places.

- the lake's ``devices`` table (what sources reported: signalling catalogs and
  registrations, topic levels, the devices ingest landed from its config): the newest
  row of each device wins, ``first_seen`` is the earliest of all its rows;
- the devices ``city.yaml`` names, as each source's adapter says
  (``configured.py``): protocol, source, endpoint and what they report, for
  devices no message has described yet;
- ``device_events``: first and last sight, the source that last reported the
  device (and so its protocol) and, from online/offline events, its status.

Aggregating ``device_events`` costs a scan of the table, so it is not done per
request: ``refresh()`` builds a snapshot in a private in-memory DuckDB that
searches read, and the app calls it every ``refresh_s``. A refresh builds a new
database and swaps the reference, so a search never sees half a snapshot.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from citylake.schemas import DataLayout
from citylake.services.district import DISTRICT_SQL, DistrictFilter
from citylake.services.lakeaccess import LakeOnDemand
from citylake.services.registry.configured import ConfiguredDevice

_DEVICE_COLUMNS = (
    "device_id",
    "name",
    "type",
    "protocol",
    "manufacturer",
    "model",
    "parent_id",
    "civil_code",
    "district",
    "address",
    "longitude",
    "latitude",
    "status",
    "first_seen",
    "last_seen",
)

_LAKE_DEVICES_SQL = f"""
SELECT {", ".join(c for c in _DEVICE_COLUMNS if c != "first_seen")},
       min(first_seen) OVER (PARTITION BY device_id) AS first_seen,
       attributes AS lake_attributes
FROM devices
QUALIFY row_number() OVER (
    PARTITION BY device_id ORDER BY last_seen DESC NULLS LAST, first_seen DESC NULLS LAST) = 1
"""

# Keepalives and registrations say a device is up; offline and unregister that it is down.
_SIGHTINGS_SQL = """
SELECT device_id,
       min(ts) AS first_seen,
       max(ts) AS last_seen,
       arg_max(source, ts) AS last_source,
       list(DISTINCT source ORDER BY source) AS sources,
       arg_max(CASE WHEN kind IN ('online', 'register', 'keepalive') THEN 'online' ELSE 'offline' END, ts)
           FILTER (WHERE kind IN ('online', 'register', 'keepalive', 'offline', 'unregister')) AS status
FROM device_events
GROUP BY device_id
"""

_MERGE_SQL = """
CREATE TABLE registry AS
WITH ids AS (
    SELECT device_id FROM lake_devices
    UNION SELECT device_id FROM configured_devices
    UNION SELECT device_id FROM sightings
)
SELECT ids.device_id,
       d.name, d.type,
       coalesce(d.protocol, c.protocol, p.protocol) AS protocol,
       d.manufacturer, d.model, d.parent_id, d.civil_code, d.district, d.address, d.longitude, d.latitude,
       coalesce(d.status, s.status) AS status,
       least(d.first_seen, s.first_seen) AS first_seen,
       greatest(d.last_seen, s.last_seen) AS last_seen,
       list_sort(list_distinct(list_concat(coalesce(c.sources, []), coalesce(s.sources, [])))) AS sources,
       -- What city.yaml says of a device is the operator's word; what a source
       -- reported (a topic's extra levels) fills in when it says nothing.
       coalesce(c.attributes, d.lake_attributes) AS attributes
FROM ids
LEFT JOIN lake_devices d USING (device_id)
LEFT JOIN configured_devices c USING (device_id)
LEFT JOIN sightings s USING (device_id)
LEFT JOIN source_protocols p ON p.source = s.last_source
ORDER BY ids.device_id
"""

_FILTERS = f"""
{DISTRICT_SQL}
AND ($type IS NULL OR lower(type) = lower($type))
AND ($status IS NULL OR lower(status) = lower($status))
AND ($protocol IS NULL OR lower(protocol) = lower($protocol))
AND ($min_lon IS NULL OR (longitude BETWEEN $min_lon AND $max_lon AND latitude BETWEEN $min_lat AND $max_lat))
"""

_OUT_COLUMNS = ", ".join((*_DEVICE_COLUMNS, "sources", "attributes"))


class CatalogUnavailable(RuntimeError):
    """No snapshot yet, and the lake cannot give one now."""


@dataclass(frozen=True)
class BoundingBox:
    """``min_lon,min_lat,max_lon,max_lat`` in WGS 84 degrees (the GeoJSON order)."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    @classmethod
    def parse(cls, text: str) -> BoundingBox:
        """The box in ``text``, or ``ValueError`` saying what is wrong with it."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError(
                f"expected 4 comma-separated numbers min_lon,min_lat,max_lon,max_lat, got {len(parts)}"
            )
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError(
                "min_lon,min_lat,max_lon,max_lat must be numbers, e.g. 116.2,39.8,116.5,40.0"
            ) from None
        if not all(math.isfinite(n) for n in numbers):
            raise ValueError("coordinates must be finite numbers")
        box = cls(*numbers)
        for name, value, limit in (
            ("min_lon", box.min_lon, 180),
            ("max_lon", box.max_lon, 180),
            ("min_lat", box.min_lat, 90),
            ("max_lat", box.max_lat, 90),
        ):
            if not -limit <= value <= limit:
                raise ValueError(f"{name} {value} is outside -{limit}..{limit}")
        if box.min_lon > box.max_lon:
            raise ValueError(
                f"min_lon {box.min_lon} is greater than max_lon {box.max_lon} "
                "(boxes across the antimeridian are not supported)"
            )
        if box.min_lat > box.max_lat:
            raise ValueError(f"min_lat {box.min_lat} is greater than max_lat {box.max_lat}")
        return box


@dataclass(frozen=True)
class DeviceSearch:
    district: str | None = None
    type: str | None = None
    status: str | None = None
    protocol: str | None = None
    bbox: BoundingBox | None = None
    after: str | None = None
    limit: int = 100

    def parameters(self) -> dict[str, object]:
        box = self.bbox
        return {
            **DistrictFilter.parse(self.district).parameters(),
            "type": self.type,
            "status": self.status,
            "protocol": self.protocol,
            "min_lon": box.min_lon if box else None,
            "min_lat": box.min_lat if box else None,
            "max_lon": box.max_lon if box else None,
            "max_lat": box.max_lat if box else None,
        }


@dataclass(frozen=True)
class DevicePage:
    devices: list[dict[str, Any]]
    total: int
    next_after: str | None


def _configured_table(configured: Sequence[ConfiguredDevice]) -> pa.Table:
    merged: dict[str, dict[str, Any]] = {}
    for device in configured:
        # A device named by two sources keeps the first one's protocol and details.
        row = merged.setdefault(
            device.device_id,
            {
                "device_id": device.device_id,
                "protocol": device.protocol,
                "sources": [],
                "attributes": json.dumps(device.attributes),
            },
        )
        if device.source not in row["sources"]:
            row["sources"].append(device.source)
    schema = pa.schema(
        [
            ("device_id", pa.string()),
            ("protocol", pa.string()),
            ("sources", pa.list_(pa.string())),
            ("attributes", pa.string()),
        ]
    )
    return pa.Table.from_pylist(list(merged.values()), schema=schema)


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or ()]
    rows = []
    for values in cursor.fetchall():
        row = dict(zip(names, values, strict=True))
        row["attributes"] = json.loads(row["attributes"]) if row["attributes"] else {}
        row["sources"] = row["sources"] or []
        rows.append(row)
    return rows


class DeviceCatalog:
    def __init__(
        self, layout: DataLayout, configured: Sequence[ConfiguredDevice], protocols: Mapping[str, str]
    ) -> None:
        self.lake = LakeOnDemand(layout)
        self._configured = _configured_table(configured)
        self._protocols = pa.table(
            {"source": list(protocols), "protocol": list(protocols.values())},
            schema=pa.schema([("source", pa.string()), ("protocol", pa.string())]),
        )
        self._refresh_lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None
        self.device_count = 0
        self.refreshed_at: float | None = None
        self.refresh_seconds: float | None = None
        self.last_error: str | None = None

    def refresh(self) -> int:
        """Rebuild the snapshot from the lake; returns the number of devices.
        Raises on a lake error, keeping the previous snapshot (and saying so in
        ``last_error``)."""
        with self._refresh_lock:
            started = time.monotonic()
            try:
                db = self._build()
            except Exception as exc:  # whatever the lake raised, /healthz must be able to say it
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            count = db.execute("SELECT count(*) FROM registry").fetchone()
            self._db = db  # readers holding cursors of the old database finish on it
            self.device_count = int(count[0]) if count else 0
            self.refreshed_at = time.time()
            self.refresh_seconds = time.monotonic() - started
            self.last_error = None
            return self.device_count

    def _build(self) -> duckdb.DuckDBPyConnection:
        lake_cursor = self.lake.cursor()
        try:
            lake_devices = lake_cursor.execute(_LAKE_DEVICES_SQL).to_arrow_table()
            sightings = lake_cursor.execute(_SIGHTINGS_SQL).to_arrow_table()
        finally:
            lake_cursor.close()
        db = duckdb.connect(":memory:")
        db.execute("SET TimeZone = 'UTC'")
        db.register("lake_devices", lake_devices)
        db.register("sightings", sightings)
        db.register("configured_devices", self._configured)
        db.register("source_protocols", self._protocols)
        db.execute(_MERGE_SQL)
        for name in ("lake_devices", "sightings", "configured_devices", "source_protocols"):
            db.unregister(name)
        return db

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        db = self._db
        if db is None:
            try:
                self.refresh()
            except Exception as exc:
                raise CatalogUnavailable(
                    f"the device catalog could not be built from the lake ({type(exc).__name__}: {exc}); "
                    "see the registry's log and /healthz"
                ) from exc
            db = self._db
        assert db is not None
        return db.cursor()

    def search(self, query: DeviceSearch) -> DevicePage:
        cursor = self._cursor()
        try:
            params = query.parameters()
            total_row = cursor.execute(f"SELECT count(*) FROM registry WHERE {_FILTERS}", params).fetchone()
            cursor.execute(
                f"SELECT {_OUT_COLUMNS} FROM registry WHERE {_FILTERS} "
                "AND ($after IS NULL OR device_id > $after) ORDER BY device_id LIMIT $fetch",
                {**params, "after": query.after, "fetch": query.limit + 1},
            )
            rows = _rows(cursor)
        finally:
            cursor.close()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return DevicePage(
            devices=rows,
            total=int(total_row[0]) if total_row else 0,
            next_after=rows[-1]["device_id"] if more and rows else None,
        )

    def close(self) -> None:
        self.lake.close()

    def get(self, device_id: str) -> dict[str, Any] | None:
        cursor = self._cursor()
        try:
            cursor.execute(f"SELECT {_OUT_COLUMNS} FROM registry WHERE device_id = $id", {"id": device_id})
            rows = _rows(cursor)
        finally:
            cursor.close()
        return rows[0] if rows else None
