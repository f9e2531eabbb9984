"""Rows accumulated column-wise into Arrow record batches of one table.

Adapters hand over rows (dicts) or whole columns (one list per column, the
fast path for batched payloads). Validation happens when the batch is built,
vectorised with Arrow: the common case (everything valid) costs one
``pa.array`` per column; only a batch that fails is re-checked row by row to
name the culprits, which go to ``rejected`` with the raw input they came from.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from citylake.schemas import TableSpec, validate_row
from citylake.schemas.validation import MAX_TEXT_CHARS, MAX_TS_MS, MIN_TS_MS

# A cheap per-value size estimate; exact sizes are known only after building
# arrays, and the limit only needs to stop runaway buffers.
_FIXED_WIDTH_BYTES = 8


@dataclass(frozen=True)
class TimeWindow:
    """The event times ingest accepts, relative to the clock when a batch is
    built: a device whose clock says 2099 would otherwise pin every "latest"
    query to its reading forever, and one stuck in 2001 fills a partition
    retention drops at once. ``None`` on a side leaves that side open."""

    past_ms: int | None = 3650 * 86_400_000
    future_ms: int | None = 86_400_000

    def bounds(self, now_ms: int) -> tuple[int, int]:
        low = MIN_TS_MS if self.past_ms is None else max(MIN_TS_MS, now_ms - self.past_ms)
        high = MAX_TS_MS if self.future_ms is None else min(MAX_TS_MS, now_ms + self.future_ms + 1)
        return low, high

    def error(self, table: str, column: str, value: object, now_ms: int) -> str | None:
        """The reject reason for ``value`` outside the window, else None."""
        if not isinstance(value, int) or isinstance(value, bool):
            return None  # other problems are validate_row's to name
        low, high = self.bounds(now_ms)
        if MIN_TS_MS <= value < MAX_TS_MS and not low <= value < high:
            side = "ahead of" if value >= high else "behind"
            return (
                f"{table}.{column}: timestamp outside the accepted window: {value} ms is "
                f"{abs(value - now_ms) / 1000:.0f} s {side} the ingest clock "
                f"(ingest.accept_past_days / ingest.accept_future_s)"
            )
        return None


@dataclass(frozen=True)
class RejectedRow:
    source: str
    raw: bytes
    reason: str


class ColumnBatcher:
    """One table's buffered rows as Python lists, one per column."""

    def __init__(self, spec: TableSpec, window: TimeWindow | None = None) -> None:
        self.spec = spec
        self.window = window
        self._names = spec.schema.names
        self._reset()

    def _reset(self) -> None:
        self._columns: dict[str, list[object]] = {n: [] for n in self._names}
        self._raws: list[bytes] = []
        self._sources: list[str] = []
        self._forced: dict[int, str] = {}
        self._bytes = 0
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._raws)

    @property
    def approx_bytes(self) -> int:
        return self._bytes

    def age_s(self, now: float | None = None) -> float:
        if self._first_at is None:
            return 0.0
        return (now if now is not None else time.monotonic()) - self._first_at

    def append(self, row: Mapping[str, object], raw: bytes = b"", source: str = "") -> None:
        if self._first_at is None:
            self._first_at = time.monotonic()
        unknown = row.keys() - self._columns.keys()
        if unknown:
            self._forced[len(self._raws)] = (
                f"{self.spec.name}.{sorted(unknown)[0]}: not a column of this table"
            )
        for name in self._names:
            self._columns[name].append(row.get(name))
        self._raws.append(raw)
        self._sources.append(source)
        self._bytes += len(raw) + _FIXED_WIDTH_BYTES * len(self._names)

    def extend(
        self, columns: Mapping[str, Sequence[object]], count: int, raw: bytes = b"", source: str = ""
    ) -> None:
        """Append ``count`` rows given as columns; a missing column is all null."""
        if count == 0:
            return
        if self._first_at is None:
            self._first_at = time.monotonic()
        for name, target in self._columns.items():
            values = columns.get(name)
            if values is None:
                target.extend([None] * count)
            elif len(values) != count:
                raise ValueError(f"{self.spec.name}.{name}: {len(values)} values for {count} rows")
            else:
                target.extend(values)
        if count == 1:  # a live stream's message: one reading
            self._raws.append(raw)
            self._sources.append(source)
        else:
            self._raws.extend([raw] * count)
            self._sources.extend([source] * count)
        self._bytes += len(raw) + _FIXED_WIDTH_BYTES * len(self._names) * count

    def take(self) -> tuple[pa.RecordBatch, list[RejectedRow]]:
        """The valid rows as one batch of the exact schema, and the invalid ones
        with their reasons. The batcher is empty afterwards."""
        columns, raws, sources, forced = self._columns, self._raws, self._sources, self._forced
        self._reset()
        if forced:
            return self._take_row_by_row(columns, raws, sources, forced)
        try:
            batch = self._build(columns)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            return self._take_row_by_row(columns, raws, sources)
        bad = self._vector_checks(batch)
        if bad is None:
            return batch, []
        keep = pc.invert(bad)
        rejected_rows = [
            RejectedRow(sources[i], raws[i], reason) for i, reason in self._reasons(columns, bad.to_pylist())
        ]
        return batch.filter(keep), rejected_rows

    def _build(self, columns: Mapping[str, list[object]]) -> pa.RecordBatch:
        arrays = []
        for field in self.spec.schema:
            values = columns[field.name]
            arrays.append(pa.array(values, field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.spec.schema)

    def _vector_checks(self, batch: pa.RecordBatch) -> pa.BooleanArray | None:
        """Rows that convert to Arrow but break the contract (nulls, ranges)."""
        bad: pa.BooleanArray | None = None

        def mark(condition: pa.Array) -> None:
            nonlocal bad
            condition = pc.fill_null(condition, False)
            bad = condition if bad is None else pc.or_(bad, condition)

        for name in self.spec.required:
            column = batch.column(name)
            if column.null_count:
                mark(pc.is_null(column))
        for field in self.spec.schema:
            column = batch.column(field.name)
            dtype = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
            if pa.types.is_timestamp(dtype):
                ms = pc.cast(column, pa.int64())
                mark(pc.or_(pc.less(ms, MIN_TS_MS), pc.greater_equal(ms, MAX_TS_MS)))
            elif pa.types.is_floating(dtype):
                mark(pc.invert(pc.is_finite(column)))
            elif pa.types.is_string(dtype) and not pa.types.is_dictionary(field.type):
                mark(pc.greater(pc.utf8_length(column), MAX_TEXT_CHARS))
        if self.window is not None and self.spec.time_column is not None:
            low, high = self.window.bounds(int(time.time() * 1000))
            ms = pc.cast(batch.column(self.spec.time_column), pa.int64())
            mark(pc.or_(pc.less(ms, low), pc.greater_equal(ms, high)))
        if bad is None or not pc.any(bad).as_py():
            return None
        return bad

    def _error(self, row: Mapping[str, object], now_ms: int) -> str | None:
        error = validate_row(self.spec, row)
        if error is not None:
            return str(error)
        column = self.spec.time_column
        if self.window is not None and column is not None:
            return self.window.error(self.spec.name, column, row.get(column), now_ms)
        return None

    def _reasons(self, columns: Mapping[str, list[object]], bad: list[bool]) -> list[tuple[int, str]]:
        reasons = []
        now_ms = int(time.time() * 1000)
        for index, is_bad in enumerate(bad):
            if is_bad:
                row = {name: columns[name][index] for name in self._names}
                error = self._error(row, now_ms)
                reasons.append((index, error or f"{self.spec.name}: invalid row"))
        return reasons

    def _take_row_by_row(
        self,
        columns: Mapping[str, list[object]],
        raws: list[bytes],
        sources: list[str],
        forced: Mapping[int, str] | None = None,
    ) -> tuple[pa.RecordBatch, list[RejectedRow]]:
        good: dict[str, list[object]] = {n: [] for n in self._names}
        rejected_rows = []
        now_ms = int(time.time() * 1000)
        for index, raw in enumerate(raws):
            if forced and index in forced:
                rejected_rows.append(RejectedRow(sources[index], raw, forced[index]))
                continue
            row = {name: columns[name][index] for name in self._names}
            error = self._error(row, now_ms)
            if error is None:
                for name in self._names:
                    good[name].append(row[name])
            else:
                rejected_rows.append(RejectedRow(sources[index], raw, error))
        return self._build(good), rejected_rows
