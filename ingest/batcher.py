"""Rows accumulated column-wise into Arrow record batches of one table."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pyarrow as pa

from citylake.schemas import TableSpec

# A cheap per-value size estimate; exact Arrow sizes are known only after
# building arrays, and the limit only needs to stop runaway buffers.
_FIXED_WIDTH_BYTES = 8


class ColumnBatcher:
    """Appends rows as columns (one Python list per column) and builds one
    ``pyarrow.RecordBatch`` of the table's exact schema on ``take()``."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self._names = spec.schema.names
        self._columns: dict[str, list[object]] = {n: [] for n in self._names}
        self._bytes = 0
        self._first_at: float | None = None

    def __len__(self) -> int:
        return len(self._columns[self._names[0]])

    @property
    def approx_bytes(self) -> int:
        return self._bytes

    def age_s(self, now: float | None = None) -> float:
        if self._first_at is None:
            return 0.0
        return (now if now is not None else time.monotonic()) - self._first_at

    def append(self, row: Mapping[str, object]) -> None:
        if self._first_at is None:
            self._first_at = time.monotonic()
        size = 0
        for name in self._names:
            value = row.get(name)
            self._columns[name].append(value)
            size += len(value) if isinstance(value, str | bytes) else _FIXED_WIDTH_BYTES
        self._bytes += size

    def take(self) -> pa.RecordBatch:
        """The buffered rows as one batch; the batcher is empty afterwards."""
        arrays = []
        for field in self.spec.schema:
            values = self._columns[field.name]
            if pa.types.is_dictionary(field.type):
                array = pa.array(values, field.type.value_type).dictionary_encode()
                array = array.cast(field.type)
            else:
                array = pa.array(values, field.type)
            arrays.append(array)
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.spec.schema)
        self._columns = {n: [] for n in self._names}
        self._bytes = 0
        self._first_at = None
        return batch
