"""The hot tier: latest values and the recent window of readings, in memory.

Fed by the live feed (ingest publishes each committed batch through Dapr
pub/sub; services/query/live.py receives it) and rebuilt from the lake at
start, so the questions a city asks most (the latest value of a device, the
last minutes of one device) never touch Parquet.

Columnar numpy arrays, not a database: a point lookup is a dict probe and an
array read (microseconds; an in-memory DuckDB table with indexes measured
0.6 ms p50 per lookup and 19 µs per merged row). Merging is idempotent: a
batch delivered twice, or seen both live and in the lake, changes nothing.
The lake stays the truth; a periodic catch-up merges what the feed missed.

Bounded (issue 13): the latest values are dense device x metric arrays, so
distinct keys fed from outside would grow them quadratically (2,000 invented
devices and metrics measured 133 MiB; 20,000 would be ~39 GiB). ``HotTierBounds``
caps devices, metrics, units and the window's rows; past a cap the least
recently updated devices (or the metrics fewest devices report, with the
devices that report them) are evicted and counted. An evicted device is
unknown to the tier, so its questions go to the lake; a device first heard
after any eviction might be one evicted before, so the tier never claims to
know it whole ("untrusted": the lake answers it too).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)


class LakeReader(Protocol):
    """What the hot tier needs of the lake: ``Lake`` or the service's sandboxed one."""

    def cursor(self) -> duckdb.DuckDBPyConnection: ...


@dataclass(frozen=True)
class HotTierBounds:
    """What the hot tier may hold, whatever the feed sends.

    The latest-value arrays take ``LATEST_CELL_BYTES`` per device x metric
    cell, so at most ``max_devices * max_metrics * LATEST_CELL_BYTES``; the
    window about ``WINDOW_ROW_BYTES`` per reading (twice that while a merge
    runs)."""

    max_devices: int = 150_000
    max_metrics: int = 32
    max_units: int = 1024
    max_window_rows: int = 4_000_000

    @property
    def max_bytes(self) -> int:
        return (
            self.max_devices * self.max_metrics * LATEST_CELL_BYTES + self.max_window_rows * WINDOW_ROW_BYTES
        )


# ts, ingest and value (8 B each), unit and site codes (4 B each), quality (1 B).
LATEST_CELL_BYTES = 33
# device, metric and unit codes (4 B each), ts, ingest, value (8 B each),
# quality (1 B), the text column's object pointer (8 B).
WINDOW_ROW_BYTES = 45

COLUMNS = ("device_id", "metric", "ts", "value", "text", "unit", "quality", "ingest_ts")
Array = np.ndarray[Any, Any]
_NONE = np.iinfo(np.int64).min


def _millis(column: pa.ChunkedArray) -> Array:
    millis: Array = (
        pc.cast(column.combine_chunks(), pa.timestamp("ms", tz="UTC")).cast(pa.int64()).to_numpy(False)
    )
    return millis


class _Codes:
    """Stable small integers for strings (devices, metrics, units), at most
    ``capacity`` of them; released codes are handed out again."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.index: dict[str, int] = {}
        self.names: list[str | None] = []  # by code; None for a released code
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self.index)

    def code(self, name: str) -> int:
        """The name's code; -1 when it has none and every code is taken."""
        found = self.index.get(name)
        if found is None:
            if self._free:
                found = self._free.pop()
                self.names[found] = name
            elif len(self.names) < self.capacity:
                found = len(self.names)
                self.names.append(name)
            else:
                return -1
            self.index[name] = found
        return found

    def release(self, codes: Array) -> None:
        for code in codes.tolist():
            name = self.names[code]
            if name is not None:
                del self.index[name]
                self.names[code] = None
                self._free.append(code)

    def new_names(self, names: list[str]) -> list[str]:
        return [n for n in names if n not in self.index]

    def encode(self, column: pa.ChunkedArray) -> Array:
        """Codes for a string column (-1 where none is left), one dict lookup
        per distinct value."""
        encoded = _distinct(column)
        mapping = np.array([self.code(v) for v in encoded.dictionary.to_pylist()] or [0], dtype=np.int32)
        codes: Array = mapping[encoded.indices.to_numpy(False)]
        return codes


def _distinct(column: pa.ChunkedArray) -> pa.DictionaryArray:
    encoded: pa.DictionaryArray = pc.dictionary_encode(
        pc.cast(column, pa.string())
        if not pa.types.is_dictionary(column.type)
        else column.cast(column.type.value_type)
    ).combine_chunks()
    return encoded


def _most_reporters(batch: pa.Table, metrics: set[str]) -> int:
    """The most devices of ``batch`` reporting any one of ``metrics``."""
    pairs = pa.table(
        {
            "metric": pc.cast(batch.column("metric"), pa.string()),
            "device": _distinct(batch.column("device_id")).indices,
        }
    )
    counted = pairs.group_by("metric").aggregate([("device", "count_distinct")])
    names, counts = counted.column(0).to_pylist(), counted.column(1).to_pylist()
    return max((n for m, n in zip(names, counts, strict=True) if m in metrics), default=0)


@dataclass
class _Chunk:
    """Recent readings sorted by (device, ts)."""

    device: Array  # int32 codes
    metric: Array  # int32 codes
    ts: Array  # int64 ms
    ingest: Array
    value: Array  # float64, NaN = none
    quality: Array  # uint8
    unit: Array  # int32 codes, -1 = none
    text: Array  # object

    @property
    def max_ts(self) -> int:
        return int(self.ts.max()) if len(self.ts) else _NONE

    def __len__(self) -> int:
        return len(self.ts)

    def without(self, devices: Array) -> _Chunk:
        """The chunk less the rows of ``devices`` (still sorted)."""
        keep = ~np.isin(self.device, devices)
        return _Chunk(**{k: getattr(self, k)[keep] for k in _Chunk.__dataclass_fields__})

    @staticmethod
    def concat(chunks: list[_Chunk], since_ms: int) -> _Chunk:
        fields = {
            name: np.concatenate([getattr(c, name) for c in chunks]) for name in _Chunk.__dataclass_fields__
        }
        keep = fields["ts"] >= since_ms
        fields = {k: v[keep] for k, v in fields.items()}
        # Sorted by (device, metric, ts, ingest); one row per reading, the later ingest.
        order = np.lexsort((fields["ingest"], fields["ts"], fields["metric"], fields["device"]))
        fields = {k: v[order] for k, v in fields.items()}
        key_change = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            same = (
                (fields["device"][1:] == fields["device"][:-1])
                & (fields["metric"][1:] == fields["metric"][:-1])
                & (fields["ts"][1:] == fields["ts"][:-1])
            )
            key_change[:-1] = ~same  # keep the last of each run
        return _Chunk(**{k: v[key_change] for k, v in fields.items()})


@dataclass
class HotTierStats:
    batches: int = 0
    rows: int = 0
    catchups: int = 0
    last_catchup_s: float = 0.0
    # What the bounds cost, for /metrics (citylake_hot_*).
    devices_evicted: int = 0
    metrics_evicted: int = 0
    window_rows_evicted: int = 0  # by max_window_rows, not by age
    rows_not_cached: int = 0  # no code was left even after eviction (a batch larger than the bounds)


class HotTier:
    """``window`` of recent readings plus the latest value of every
    (device, metric) the lake or the feed has seen, within ``bounds``."""

    def __init__(
        self, window: timedelta = timedelta(minutes=10), bounds: HotTierBounds | None = None
    ) -> None:
        self.window = window
        self.bounds = bounds or HotTierBounds()
        self.devices = _Codes(self.bounds.max_devices)
        self.metrics = _Codes(self.bounds.max_metrics)
        self.units = _Codes(self.bounds.max_units)
        # The site each latest value came from (readings.site): answers carry it.
        self.sites = _Codes(self.bounds.max_units)
        # Writers (live merges, eviction, catch-up) take turns on ``_write``.
        # Readers of the window never lock: chunks are immutable and the tuple
        # of them is swapped whole. The latest-value arrays are read and
        # written under ``_latest``, held only for vectorised assignments.
        self._write = threading.RLock()
        self._latest = threading.Lock()
        rows, cols = min(1024, self.bounds.max_devices), min(8, self.bounds.max_metrics)
        self._ts = np.full((rows, cols), _NONE, dtype=np.int64)
        self._ingest = np.full((rows, cols), _NONE, dtype=np.int64)
        self._value = np.full((rows, cols), np.nan)
        self._quality = np.zeros((rows, cols), dtype=np.uint8)
        self._unit = np.full((rows, cols), -1, dtype=np.int32)
        self._site = np.full((rows, cols), -1, dtype=np.int32)
        # Per device code: may the tier answer for the device alone? (module docstring)
        self._trusted = np.zeros(rows, dtype=bool)
        # Per device code: batches it was in, halved at each eviction, so the
        # devices that leave first are the rare ones (a flood's invented ids
        # are each seen once), not a city's regular reporters.
        self._hits = np.zeros(rows, dtype=np.uint32)
        self._text: dict[tuple[int, int], str] = {}
        self._chunks: tuple[_Chunk, ...] = ()
        # Readings before this left the window to keep it within max_window_rows.
        self._window_floor_ms = np.iinfo(np.int64).min
        self.ready = False
        # Range questions starting before this are the lake's.
        self.covered_from_ms = np.iinfo(np.int64).max
        self.stats = HotTierStats()

    # -- writing -------------------------------------------------------------

    def _grow(self) -> None:
        rows, cols = self._ts.shape
        need_rows, need_cols = len(self.devices.names), len(self.metrics.names)
        if need_rows <= rows and need_cols <= cols:
            return
        new_rows = min(self.bounds.max_devices, max(rows, need_rows * 2 if need_rows > rows else rows))
        new_cols = min(self.bounds.max_metrics, max(cols, need_cols * 2))
        for name, fill in (
            ("_ts", _NONE),
            ("_ingest", _NONE),
            ("_value", np.nan),
            ("_quality", 0),
            ("_unit", -1),
            ("_site", -1),
        ):
            old = getattr(self, name)
            grown = np.full((new_rows, new_cols), fill, dtype=old.dtype)
            grown[:rows, :cols] = old
            setattr(self, name, grown)
        trusted = np.zeros(new_rows, dtype=bool)
        trusted[:rows] = self._trusted
        self._trusted = trusted
        hits = np.zeros(new_rows, dtype=np.uint32)
        hits[:rows] = self._hits
        self._hits = hits

    def _make_room(self, batch: pa.Table) -> None:
        """Evict so the batch's new devices and metrics get codes, if they can."""
        metric_names = _distinct(batch.column("metric")).dictionary.to_pylist()
        new_metrics = self.metrics.new_names(metric_names)
        over = len(self.metrics) + len(new_metrics) - self.bounds.max_metrics
        if over > 0:
            most = _most_reporters(batch, set(new_metrics))
            self._evict_metrics(over, keep=metric_names, at_most_reporters=most)
        device_names = _distinct(batch.column("device_id")).dictionary.to_pylist()
        new_devices = len(self.devices.new_names(device_names))
        over = len(self.devices) + new_devices - self.bounds.max_devices
        if over > 0:
            # A sixteenth of the tier at a time, so a flood does not evict per batch.
            self._evict_devices(max(over, self.bounds.max_devices // 16), keep=device_names)

    def _evict_devices(self, count: int, keep: list[str]) -> None:
        """The ``count`` devices (not in ``keep``) seen in fewest batches
        lately, the least recent of those first, leave."""
        kept = set(keep)
        known = np.array([c for n, c in self.devices.index.items() if n not in kept], dtype=np.int64)
        if len(known) == 0:
            return
        newest = self._ts[known].max(axis=1)
        victims = known[np.lexsort((newest, self._hits[known]))[:count]]
        self._drop_devices(victims)
        self._hits //= 2

    def _evict_metrics(self, count: int, keep: list[str], at_most_reporters: int) -> None:
        """Up to ``count`` metrics the fewest devices report (not in ``keep``,
        and no more devices than ``at_most_reporters``: a metric one device
        invents never pushes out one a hundred report) leave, and with them
        every device reporting one: a device's answer without one of its
        metrics would be wrong, the lake's is whole."""
        kept = set(keep)
        known = np.array([c for n, c in self.metrics.index.items() if n not in kept], dtype=np.int64)
        if len(known) == 0:
            return
        reporting = (self._ts[:, known] != _NONE).sum(axis=0)
        order = np.argsort(reporting, kind="stable")[:count]
        victims = known[order[reporting[order] <= at_most_reporters]]
        if len(victims) == 0:
            return
        holders = np.nonzero((self._ts[:, victims] != _NONE).any(axis=1))[0]
        self._drop_devices(holders)
        with self._latest:
            for name in ("_ts", "_ingest"):
                getattr(self, name)[:, victims] = _NONE
            self._value[:, victims] = np.nan
            self._unit[:, victims] = -1
            self._site[:, victims] = -1
        self.metrics.release(victims)
        self.stats.metrics_evicted += len(victims)

    def _drop_devices(self, victims: Array) -> None:
        if len(victims) == 0:
            return
        with self._latest:
            for name in ("_ts", "_ingest"):
                getattr(self, name)[victims] = _NONE
            self._value[victims] = np.nan
            self._quality[victims] = 0
            self._unit[victims] = -1
            self._site[victims] = -1
            self._trusted[victims] = False
            self._hits[victims] = 0
            gone = set(victims.tolist())
            self._text = {k: v for k, v in self._text.items() if k[0] not in gone}
            self.devices.release(victims)
        self._chunks = tuple(c.without(victims) for c in self._chunks)
        self.stats.devices_evicted += len(victims)

    def apply(self, batch: pa.Table) -> None:
        """Merge readings (the readings schema, or at least ``COLUMNS``)."""
        missing = [c for c in COLUMNS if c not in batch.column_names]
        if missing:
            raise ValueError(f"live batch lacks columns {', '.join(missing)}")
        if batch.num_rows == 0:
            return
        with self._write:
            self._make_room(batch)
            seen_before = len(self.devices.names)
            evicted_ever = self.stats.devices_evicted > 0
            device = self.devices.encode(batch.column("device_id"))
            metric = self.metrics.encode(batch.column("metric"))
            unit_col = batch.column("unit")
            unit = np.where(
                pc.is_null(unit_col).to_numpy(False),
                -1,
                self.units.encode(
                    pc.fill_null(
                        pc.cast(unit_col, pa.string())
                        if not pa.types.is_dictionary(unit_col.type)
                        else unit_col.cast(unit_col.type.value_type),
                        "",
                    )
                ),
            )
            unit_known = pc.is_null(unit_col).to_numpy(False) | (unit >= 0)
            # readings.site is in every batch ingest publishes; a batch without
            # it (or past max_units sites) answers with no site.
            site = (
                self.sites.encode(batch.column("site"))
                if "site" in batch.column_names
                else np.full(batch.num_rows, -1, dtype=np.int32)
            )
            ts, ingest = _millis(batch.column("ts")), _millis(batch.column("ingest_ts"))
            value = pc.fill_null(pc.cast(batch.column("value"), pa.float64()), float("nan")).to_numpy()
            quality = pc.cast(batch.column("quality"), pa.uint8()).to_numpy()
            text = batch.column("text").to_numpy(zero_copy_only=False)
            placed = (device >= 0) & (metric >= 0)
            lost = ~(placed & unit_known)
            with self._latest:
                self._grow()
                # A device first coded now is whole in the tier unless a device
                # was ever evicted: it may be one of those, back, with its past
                # in the lake only. (Until then codes are never reused.)
                present = np.unique(device[placed])
                self._hits[present] += 1
                if not evicted_ever:
                    self._trusted[present[present >= seen_before]] = True
            if lost.any():
                # A reading the tier cannot hold makes its device the lake's to answer.
                self.stats.rows_not_cached += int(lost.sum())
                known = device[lost & (device >= 0)]
                if len(known):
                    with self._latest:
                        self._trusted[np.unique(known)] = False
                keep = ~lost
                device, metric, ts, ingest = device[keep], metric[keep], ts[keep], ingest[keep]
                value, quality, unit, text = value[keep], quality[keep], unit[keep], text[keep]
                site = site[keep]
            if len(device):
                with self._latest:
                    self._merge_latest(device, metric, ts, ingest, value, quality, unit, text, site)
                chunk = _Chunk(
                    device.astype(np.int32), metric.astype(np.int32), ts, ingest, value, quality,
                    unit.astype(np.int32), text,
                )  # fmt: skip
                self._add_chunk(_Chunk.concat([chunk], self._since_ms()))
            self.stats.batches += 1
            self.stats.rows += batch.num_rows

    def _add_chunk(self, chunk: _Chunk) -> None:
        """Size-tiered, like a binary counter: a chunk merges with the one before
        it while that one is no more than twice its size. Each reading is
        re-sorted O(log n) times in all, the window stays O(log n) chunks, and
        no merge ever re-sorts the whole window because one batch arrived."""
        chunks = [*self._chunks, chunk]
        since = self._since_ms()
        while len(chunks) >= 2 and 2 * len(chunks[-1]) >= len(chunks[-2]):
            chunks[-2:] = [_Chunk.concat(chunks[-2:], since)]
        self._chunks = tuple(chunks)
        self._bound_window()

    def _bound_window(self) -> None:
        """Past max_window_rows, the oldest readings leave (to three quarters
        of the bound, so this is not paid per batch) and the window starts
        later: ranges before the new start are the lake's."""
        total = sum(len(c) for c in self._chunks)
        if total <= self.bounds.max_window_rows:
            return
        target = self.bounds.max_window_rows * 3 // 4
        stamps = np.concatenate([c.ts for c in self._chunks])
        floor = int(np.partition(stamps, total - target - 1)[total - target - 1]) + 1
        self._window_floor_ms = max(self._window_floor_ms, floor)
        self.covered_from_ms = max(self.covered_from_ms, floor) if self.ready else self.covered_from_ms
        self._chunks = tuple(_Chunk.concat([c], floor) for c in self._chunks if c.max_ts >= floor)
        self.stats.window_rows_evicted += total - sum(len(c) for c in self._chunks)

    def _merge_latest(
        self,
        device: Array,
        metric: Array,
        ts: Array,
        ingest: Array,
        value: Array,
        quality: Array,
        unit: Array,
        text: Array,
        site: Array,
    ) -> None:
        # The newest row of each key in the batch, then only where newer than stored.
        order = np.lexsort((ingest, ts, metric, device))
        d, m = device[order], metric[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = (d[1:] != d[:-1]) | (m[1:] != m[:-1])
        pick = order[last]
        d, m = device[pick], metric[pick]
        old_ts, old_ingest = self._ts[d, m], self._ingest[d, m]
        newer = (ts[pick] > old_ts) | ((ts[pick] == old_ts) & (ingest[pick] > old_ingest))
        pick, d, m = pick[newer], d[newer], m[newer]
        self._ts[d, m] = ts[pick]
        self._ingest[d, m] = ingest[pick]
        self._value[d, m] = value[pick]
        self._quality[d, m] = quality[pick]
        self._unit[d, m] = unit[pick]
        self._site[d, m] = site[pick]
        # Text readings are rare: Python touches only them, and the cells that
        # held text before (found in the dict only when it holds any).
        with_text = np.nonzero(pc.is_valid(pa.array(text[pick], pa.string())).to_numpy(False))[0]
        for i, row, col in zip(
            pick[with_text].tolist(), d[with_text].tolist(), m[with_text].tolist(), strict=True
        ):
            self._text[(row, col)] = text[i]
        if self._text:
            numeric = np.ones(len(pick), dtype=bool)
            numeric[with_text] = False
            for row, col in zip(d[numeric].tolist(), m[numeric].tolist(), strict=True):
                self._text.pop((row, col), None)

    def _since_ms(self) -> int:
        return max(int((datetime.now(UTC) - self.window).timestamp() * 1000), self._window_floor_ms)

    def evict(self) -> int:
        """Drop readings that left the window; returns how many. Whole chunks
        go at once; only the chunk straddling the window's start is rebuilt."""
        with self._write:
            cutoff = self._since_ms()
            before = sum(len(c) for c in self._chunks)
            kept = []
            for chunk in self._chunks:
                if chunk.max_ts < cutoff:
                    continue
                straddles = len(chunk) and int(chunk.ts.min()) < cutoff
                kept.append(_Chunk.concat([chunk], cutoff) if straddles else chunk)
            self._chunks = tuple(kept)
            return before - sum(len(c) for c in kept)

    def catch_up(self, lake: LakeReader, latest_since: datetime | None = None) -> None:
        """Merge the lake's readings: each key's newest since ``latest_since``
        (all of the lake when None) and the whole recent window."""
        started = time.perf_counter()
        cursor = lake.cursor()
        select = "SELECT device_id, metric, ts, value, text, unit, quality, ingest_ts, site FROM readings"
        # Each key's newest row as a hash aggregate (arg_max over (ts,
        # ingest_ts)), not a window: a QUALIFY row_number() sorts the whole
        # lake, and ran out of memory_limit_mb rebuilding 14.4M readings
        # (arg_max: 7 s vs 21 s on 14.4M rows of a native table here). Over
        # every copy (`_raw_readings`) ranked by the newest ts, then the
        # conflict rule's order (lake/views/readings.sql): the same row the
        # deduplicated view would give, without its aggregate over every key.
        latest = cursor.execute(
            "SELECT device_id, metric, r.ts, r.value, r.text, r.unit, r.quality, r.ingest_ts, r.site FROM ("
            " SELECT device_id, metric, arg_max(struct_pack(ts, value, text, unit, quality, ingest_ts, site),"
            " struct_pack(ts, ingest_ts, site, has_value := value IS NOT NULL, value,"
            " has_text := text IS NOT NULL, text, quality, has_unit := unit IS NOT NULL, unit, source)) AS r"
            " FROM _raw_readings WHERE $from IS NULL OR ts >= $from GROUP BY device_id, metric)",
            {"from": latest_since},
        ).to_arrow_table()
        # The window's part of the lake: all of it at the rebuild, then only
        # what the last catch-up could not have seen.
        window_start = datetime.fromtimestamp(self._since_ms() / 1000, UTC)
        since = max(window_start, latest_since) if latest_since is not None else window_start
        recent = cursor.execute(f"{select} WHERE ts >= $since", {"since": since}).to_arrow_table()
        self.apply(latest)
        self.apply(recent)
        self.stats.catchups += 1
        self.stats.last_catchup_s = time.perf_counter() - started

    def rebuild(self, lake: LakeReader) -> None:
        """Fill from the lake before reporting ready (at start)."""
        self.catch_up(lake)
        self.covered_from_ms = self._since_ms()
        self.ready = True
        log.info(
            "hot tier ready: %d devices, %d recent readings in %.1f s",
            len(self.devices),
            sum(len(c) for c in self._chunks),
            self.stats.last_catchup_s,
        )

    # -- reading -------------------------------------------------------------

    def _row(self, d: int, m: int, with_site: bool = False) -> dict[str, object]:
        unit, site = int(self._unit[d, m]), int(self._site[d, m])
        value = float(self._value[d, m])
        return {
            "metric": self.metrics.names[m],
            "ts": datetime.fromtimestamp(int(self._ts[d, m]) / 1000, UTC),
            "value": None if np.isnan(value) else value,
            "text": self._text.get((d, m)),
            "unit": self.units.names[unit] if unit >= 0 else None,
            "quality": int(self._quality[d, m]),
            **({"site": self.sites.names[site] if site >= 0 else None} if with_site else {}),
        }

    def _device(self, device_id: str) -> int | None:
        """The device's code when the tier may answer for it alone."""
        d = self.devices.index.get(device_id)
        return d if d is not None and self._trusted[d] else None

    def knows(self, device_id: str) -> bool:
        """Whether the tier's answers about the device are the lake's."""
        with self._latest:
            return self._device(device_id) is not None

    def answers_for(self, device_id: str) -> bool:
        """Whether the tier's answer about the device is the lake's: it knows
        the device whole, or it never evicted one and has not heard of it."""
        with self._latest:
            return self._device(device_id) is not None or (
                self.stats.devices_evicted == 0 and device_id not in self.devices.index
            )

    def latest(
        self, device_id: str, metric: str | None = None, with_site: bool = False
    ) -> list[dict[str, object]] | None:
        """Each metric's newest reading of a device (metric order), or None
        when the hot tier does not know the device whole (ask the lake);
        ``with_site`` adds the site each came from."""
        with self._latest:
            d = self._device(device_id)
            if d is None:
                return None
            if metric is not None:
                m = self.metrics.index.get(metric)
                if m is None or self._ts[d, m] == _NONE:
                    return []
                return [self._row(d, m, with_site)]
            known = np.nonzero(self._ts[d, : len(self.metrics.names)] != _NONE)[0]
            rows = [self._row(d, int(m), with_site) for m in known]
        return sorted(rows, key=lambda r: str(r["metric"]))

    def covers(self, start: datetime) -> bool:
        """Can a range starting at ``start`` be answered from memory alone
        (for a device the tier ``knows``)?"""
        start_ms = int(start.timestamp() * 1000)
        return self.ready and start_ms >= max(self.covered_from_ms, self._since_ms())

    def readings(self, device_id: str, start: datetime, end: datetime) -> list[dict[str, object]]:
        """A device's readings with ``start <= ts < end``, by (ts, metric)."""
        lo_ms, hi_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        d = self.devices.index.get(device_id)
        if d is None:
            return []
        found: dict[tuple[int, int], tuple[int, _Chunk, int]] = {}
        for chunk in self._chunks:  # one consistent tuple, however writers move on
            left = int(np.searchsorted(chunk.device, d, "left"))
            right = int(np.searchsorted(chunk.device, d, "right"))
            for i in range(left, right):
                ts = int(chunk.ts[i])
                if lo_ms <= ts < hi_ms:
                    key = (ts, int(chunk.metric[i]))
                    seen = found.get(key)
                    if seen is None or chunk.ingest[i] > seen[0]:
                        found[key] = (int(chunk.ingest[i]), chunk, i)
        rows = []
        for (ts, m), (_, chunk, i) in sorted(
            found.items(), key=lambda kv: (kv[0][0], str(self.metrics.names[kv[0][1]]))
        ):
            unit = int(chunk.unit[i])
            value = float(chunk.value[i])
            rows.append({
                "ts": datetime.fromtimestamp(ts / 1000, UTC), "metric": self.metrics.names[m],
                "value": None if np.isnan(value) else value, "text": chunk.text[i],
                "unit": self.units.names[unit] if unit >= 0 else None, "quality": int(chunk.quality[i]),
            })  # fmt: skip
        return rows

    def counts(self) -> dict[str, int]:
        """Sizes for /healthz and metrics; repeats not yet merged away count too."""
        with self._latest:
            return {
                "devices": len(self.devices),
                "latest_values": int((self._ts != _NONE).sum()),
                "recent_readings": sum(len(c) for c in self._chunks),
            }

    def footprint_bytes(self) -> int:
        """Bytes the latest-value arrays and the window hold now (text values aside)."""
        return (
            self._ts.size * LATEST_CELL_BYTES
            + self._trusted.size
            + sum(len(c) for c in self._chunks) * WINDOW_ROW_BYTES
        )
