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

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from citylake.config import MetricType

Received = str  # "number" or "text"
REASON_PREFIX = "metric type conflict"


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
        bad: list[tuple[int, str]] = []
        count = len(metrics)
        if self._all_kept(source, declared, metrics, values, texts, count):
            return bad
        # A payload repeats few (metric, type) pairs: each is decided once per
        # call (the per-reading work was a third of landing's CPU), None for
        # kept, else what was expected and why.
        decided: dict[tuple[str, Received], tuple[str, str] | None] = {}
        for index, metric, value, text in zip(
            range(count),
            metrics,
            values if values is not None else itertools.repeat(None, count),
            texts if texts is not None else itertools.repeat(None, count),
            strict=False,
        ):
            if not isinstance(metric, str):
                continue  # schema validation names a missing or wrong metric
            if text is None and value is None:
                continue  # a null reading (bad quality) has no type to hold
            received: Received = "text" if text is not None else "number"
            key = (metric, received)
            if key in decided:
                verdict = decided[key]
            else:
                verdict = decided[key] = self._decide(source, declared, metric, received)
            if verdict is not None:
                expected, how = verdict
                bad.append(
                    (
                        index,
                        f"{REASON_PREFIX}: source {source} device {device_ids[index]} metric {metric} "
                        f"expects {expected} ({how}), received {received} {_show(value, text)}; "
                        f"declare metric_types: {{{metric}: any}} on the source if it may be both",
                    )
                )
        return bad

    def _all_kept(
        self,
        source: str,
        declared: dict[str, MetricType] | None,
        metrics: Sequence[object],
        values: Sequence[object] | None,
        texts: Sequence[object] | None,
        count: int,
    ) -> bool:
        """The common case decided per distinct metric: every reading of the
        call is a number (or every one text). False means "look reading by
        reading"; the decisions made here are the ones that pass would make."""
        no_text = texts is None or texts.count(None) == count
        if no_text and values is not None and values.count(None) == 0:
            received: Received = "number"
        elif texts is not None and texts.count(None) == 0:
            received = "text"
        else:
            return False
        try:
            distinct = dict.fromkeys(metrics)
        except TypeError:  # an unhashable metric: validation names it, the slow pass skips it
            return False
        kept = True
        for metric in distinct:
            if isinstance(metric, str) and self._decide(source, declared, metric, received) is not None:
                kept = False
        return kept

    def _decide(
        self, source: str, declared: dict[str, MetricType] | None, metric: str, received: Received
    ) -> tuple[str, str] | None:
        """None if a ``received`` reading of ``metric`` keeps its type, else the
        expected type and where that came from; fixes or refreshes first sight."""
        rule = declared.get(metric) if declared is not None else None
        if rule is not None:
            return None if rule in ("any", received) else (rule, "declared in metric_types")
        fixed = self._fixed
        key = (source, metric)
        known = fixed.get(key)
        if known is None:
            fixed[key] = received
            if len(fixed) > self.max_fixed:
                fixed.popitem(last=False)
                self.evictions += 1
            return None
        fixed.move_to_end(key)
        return None if known == received else (known, "fixed at first sight")
