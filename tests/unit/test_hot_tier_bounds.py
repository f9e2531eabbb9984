"""The hot tier stays within its bounds whatever the live feed invents
(issue 13), and what it still answers is what the lake would answer."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from citylake.ingest.live import encode
from citylake.services.query.hot_tier import HotTier, HotTierBounds
from citylake.services.query.live import ROUTE, subscription_router

Row = tuple[str, str, datetime, float]


def batch(rows: list[Row], unit: str = "m") -> pa.Table:
    now = datetime.now(UTC)
    return pa.table(
        {
            "device_id": pa.array([r[0] for r in rows]).dictionary_encode(),
            "metric": [r[1] for r in rows],
            "ts": pa.array([r[2] for r in rows], pa.timestamp("ms", tz="UTC")),
            "value": pa.array([r[3] for r in rows], pa.float64()),
            "text": pa.array([None] * len(rows), pa.string()),
            "unit": [unit] * len(rows),
            "quality": pa.array([0] * len(rows), pa.uint8()),
            "source": ["s"] * len(rows),
            "ingest_ts": pa.array([now] * len(rows), pa.timestamp("ms", tz="UTC")),
        }
    )


def ago(seconds: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds)


BOUNDS = HotTierBounds(max_devices=64, max_metrics=6, max_units=4, max_window_rows=400)


def test_a_flood_of_invented_devices_and_metrics_stays_bounded_and_never_answers_wrong() -> None:
    hot = HotTier(window=timedelta(minutes=10), bounds=BOUNDS)
    truth: dict[tuple[str, str], float] = {}
    # The city: 20 devices reporting the same 3 metrics, first.
    city = [(f"pump-{d}", f"m{m}", ago(300), float(d * 10 + m)) for d in range(20) for m in range(3)]
    hot.apply(batch(city))
    truth.update({(r[0], r[1]): r[3] for r in city})
    rng = random.Random(13)
    peak_bytes = 0
    for i in range(300):
        # The flood: one publisher inventing device ids and metric names ...
        flood = [(f"x{i}-{k}", f"invented-{rng.randrange(10_000)}", ago(60), float(k)) for k in range(12)]
        # ... while the city keeps reporting.
        pump = f"pump-{i % 20}"
        honest = [(pump, f"m{i % 3}", ago(200 - i / 10), float(i))]
        hot.apply(batch(flood + honest))
        truth.update({(r[0], r[1]): r[3] for r in flood + honest})
        peak_bytes = max(peak_bytes, hot.footprint_bytes())
        assert hot._ts.shape[0] <= BOUNDS.max_devices and hot._ts.shape[1] <= BOUNDS.max_metrics
        assert len(hot.devices) <= BOUNDS.max_devices and len(hot.metrics) <= BOUNDS.max_metrics
        assert hot.counts()["recent_readings"] <= BOUNDS.max_window_rows
    assert peak_bytes <= BOUNDS.max_bytes + BOUNDS.max_devices
    assert hot.stats.devices_evicted > 0 and hot.stats.metrics_evicted > 0
    # Whatever the tier still claims to know is the truth; the rest is the lake's (None).
    answered = 0
    for name in {d for d, _ in truth}:
        rows = hot.latest(name)
        if rows is None:
            assert not hot.answers_for(name) or name not in hot.devices.index
            continue
        answered += 1
        expected = sorted((m, v) for (d, m), v in truth.items() if d == name)
        assert [(r["metric"], r["value"]) for r in rows] == expected, name
    assert answered > 0


def test_the_issues_flood_at_the_default_bounds_stays_small() -> None:
    """Issue 13: 2,000 distinct device ids each with its own metric grew the
    dense arrays to 133 MiB. At the default bounds metrics stop at 32."""
    hot = HotTier()
    for i in range(0, 2000, 100):
        hot.apply(batch([(f"dev-{k}", f"metric-{k}", ago(5), 1.0) for k in range(i, i + 100)]))
    assert len(hot.metrics) <= hot.bounds.max_metrics
    assert hot.footprint_bytes() < 4 * 2**20
    assert hot.stats.rows_not_cached > 0  # the invented metrics past the bound: the lake's


def test_a_metric_evicted_takes_its_devices_with_it() -> None:
    hot = HotTier(bounds=HotTierBounds(max_devices=100, max_metrics=2))
    hot.apply(batch([("a", "level", ago(5), 1.0), ("b", "level", ago(5), 2.0), ("b", "rare", ago(5), 3.0)]))
    hot.apply(batch([("c", "new", ago(4), 4.0)]))  # a third metric: "rare" (one device) leaves
    assert hot.stats.metrics_evicted == 1
    assert hot.latest("b") is None  # its answer would lack "rare": the lake answers
    assert hot.latest("a") == [
        {"metric": "level", "ts": ago(5), "value": 1.0, "text": None, "unit": "m", "quality": 0}
    ]


def test_a_device_back_after_eviction_is_the_lakes_to_answer() -> None:
    hot = HotTier(bounds=HotTierBounds(max_devices=4, max_metrics=4))
    hot.apply(batch([(f"d{i}", "level", ago(60 - i), float(i)) for i in range(4)]))
    assert hot.answers_for("nobody")  # nothing evicted yet: unheard of means unknown to the lake
    hot.apply(batch([("d9", "level", ago(1), 9.0)]))  # d0, the least recent, leaves
    assert hot.stats.devices_evicted >= 1
    assert hot.latest("d0") is None and not hot.answers_for("d0")
    hot.apply(batch([("d0", "flow", ago(0), 5.0)]))  # back, with a metric; its level is in the lake
    assert hot.latest("d0") is None and not hot.answers_for("d0")
    assert hot.readings("d1", ago(120), ago(-1)) != [] or not hot.answers_for("d1")


def test_the_window_keeps_its_newest_readings_within_max_window_rows() -> None:
    hot = HotTier(window=timedelta(hours=1), bounds=HotTierBounds(max_window_rows=100))
    hot.ready, hot.covered_from_ms = True, int(ago(3600).timestamp() * 1000)
    base = ago(0)
    for i in range(30):
        hot.apply(
            batch([(f"d{k}", "level", base - timedelta(seconds=1800 - i * 60), float(i)) for k in range(10)])
        )
    assert hot.counts()["recent_readings"] <= 100
    assert hot.stats.window_rows_evicted >= 200
    assert not hot.covers(ago(1800))  # the oldest readings left: the lake's range now
    assert hot.covers(ago(60))
    recent = hot.readings("d3", base - timedelta(seconds=150), base)
    assert [r["value"] for r in recent] == [28.0, 29.0]


def test_units_past_their_bound_are_not_cached_and_counted() -> None:
    hot = HotTier(bounds=HotTierBounds(max_units=2))
    hot.apply(batch([("a", "level", ago(5), 1.0)], unit="m"))
    hot.apply(batch([("a", "flow", ago(5), 1.0)], unit="l/s"))
    hot.apply(batch([("a", "heat", ago(5), 1.0)], unit="K"))
    assert hot.stats.rows_not_cached == 1
    assert hot.latest("a") is None  # it missed a reading: the lake answers for it


def test_a_flood_through_the_subscription_route_is_counted_in_metrics() -> None:
    hot = HotTier(bounds=HotTierBounds(max_devices=32, max_metrics=4))
    registry = CollectorRegistry()
    app = FastAPI()
    app.include_router(subscription_router(hot, "pubsub", "readings", None, registry))
    with TestClient(app) as client:
        for i in range(40):
            rows = [(f"flood-{i}-{k}", f"m{i}-{k}", ago(10), 1.0) for k in range(8)]
            body = encode(batch(rows).to_batches()[0])
            answer = client.post(ROUTE, content=body, headers={"content-type": "application/octet-stream"})
            assert answer.json() == {"status": "SUCCESS"}
    sample = registry.get_sample_value
    assert sample("citylake_hot_devices") == len(hot.devices) <= 32
    assert sample("citylake_hot_max_devices") == 32
    assert (sample("citylake_hot_metrics_evicted_total") or 0) > 0
    assert (sample("citylake_hot_devices_evicted_total") or 0) > 0
    assert (sample("citylake_hot_bytes") or 0) <= hot.bounds.max_bytes + 32
