"""One type per metric: a reading whose value is of the other type is refused.

A metric is a number (``readings.value``) or text (``readings.text``). Its type
is declared per source (``metric_types`` of the source's keys) or fixed by the
first reading seen of that (source, metric). Without this, a sender that
writes ``"temp": "15.3"`` or ``"hum": "n/a"`` once would land text under a
metric whose every other reading is a number, and every average over it would
quietly skip those rows; InfluxDB answers the same mix with a field type
conflict. ``any`` in the config lets a metric be both.

The first-sight table is fed from outside (any sender may invent metric names),
so it is bounded: past ``max_fixed`` entries the least recently seen is
forgotten and fixed again when it next arrives, and the eviction is counted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from citylake.config import MetricType

Received = str  # "number" or "text"
REASON_PREFIX = "metric type conflict"


def _received(value: object, text: object) -> Received | None:
    if text is not None:
        return "text"
    if value is not None:
        return "number"
    return None  # a null reading (bad quality) has no type to hold


def _show(value: object, text: object) -> str:
    shown = repr(text if text is not None else value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


class MetricTypeGuard:
    """Decides, reading by reading, whether a metric keeps its type. Not
    thread-safe: the landing buffer calls it with its lock held."""

    def __init__(self, declared: Mapping[str, Mapping[str, MetricType]], max_fixed: int = 100_000) -> None:
        if max_fixed < 1:
            raise ValueError("max_fixed must be at least 1")
        self._declared = {source: dict(types) for source, types in declared.items() if types}
        self.max_fixed = max_fixed
        self._fixed: OrderedDict[tuple[str, str], Received] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._fixed)

    def conflicts(
        self,
        source: str,
        device_ids: Sequence[object],
        metrics: Sequence[object],
        values: Sequence[object] | None,
        texts: Sequence[object] | None,
    ) -> list[tuple[int, str]]:
        """The readings (by index) that break their metric's type, each with the
        ``rejected.reason``. The others fix or refresh their metric's type."""
        declared = self._declared.get(source)
        fixed = self._fixed
        bad: list[tuple[int, str]] = []
        for index, metric in enumerate(metrics):
            if not isinstance(metric, str):
                continue  # schema validation names a missing or wrong metric
            value = values[index] if values is not None else None
            text = texts[index] if texts is not None else None
            received = _received(value, text)
            if received is None:
                continue
            rule = declared.get(metric) if declared is not None else None
            if rule is not None:
                if rule in ("any", received):
                    continue
                how = "declared in metric_types"
                expected: str = rule
            else:
                key = (source, metric)
                known = fixed.get(key)
                if known is None:
                    fixed[key] = received
                    if len(fixed) > self.max_fixed:
                        fixed.popitem(last=False)
                        self.evictions += 1
                    continue
                fixed.move_to_end(key)
                if known == received:
                    continue
                how = "fixed at first sight"
                expected = known
            bad.append(
                (
                    index,
                    f"{REASON_PREFIX}: source {source} device {device_ids[index]} metric {metric} "
                    f"expects {expected} ({how}), received {received} {_show(value, text)}; "
                    f"declare metric_types: {{{metric}: any}} on the source if it may be both",
                )
            )
        return bad
