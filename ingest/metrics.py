"""Prometheus metrics of one ingest process, labelled by source."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    """Owned by the runner; its registry is what ``/metrics`` exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("citylake_ingest_received", "inputs received", ["source"], registry=r)
        self.received_bytes = Counter(
            "citylake_ingest_received_bytes", "input bytes received", ["source"], registry=r
        )
        self.rows_received = Counter(
            "citylake_ingest_rows", "rows decoded (landed = rows - rejected)", ["source", "table"], registry=r
        )
        self.duplicates = Counter(
            "citylake_ingest_duplicates", "redelivered inputs landed before a crash", ["source"], registry=r
        )
        self.rejected = Counter(
            "citylake_ingest_rejected", "inputs or rows rejected", ["source", "reason"], registry=r
        )
        self.rejects_dropped = Counter(
            "citylake_ingest_rejects_dropped",
            "rejects counted but not written: over the source's reject rate (reject_rate_per_s)",
            ["source"],
            registry=r,
        )
        self.batches = Counter("citylake_ingest_batches", "batches written to landing", ["table"], registry=r)
        self.landed_rows = Counter("citylake_ingest_landed_rows", "rows made durable", ["table"], registry=r)
        self.flush_seconds = Histogram(
            "citylake_ingest_flush_seconds", "time to make one flush durable", registry=r
        )
        self.buffered_rows = Gauge(
            "citylake_ingest_buffered_rows", "rows waiting for the next flush", registry=r
        )
        self.pending_acks = Gauge(
            "citylake_ingest_pending_acks", "inputs waiting for acknowledgement", registry=r
        )
        self.source_up = Gauge(
            "citylake_ingest_source_up", "1 while the source is connected", ["source"], registry=r
        )
        self.polls = Counter("citylake_ingest_polls", "polls finished", ["source", "outcome"], registry=r)
        self.polls_skipped = Counter(
            "citylake_ingest_polls_skipped",
            "polls skipped (still running or buffer full)",
            ["source", "why"],
            registry=r,
        )
        self.poll_lateness = Histogram(
            "citylake_ingest_poll_lateness_seconds",
            "actual minus scheduled poll start",
            ["source"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.poll_seconds = Histogram(
            "citylake_ingest_poll_seconds", "time one poll took", ["source"], registry=r
        )
        self.landing_bytes = Gauge("citylake_ingest_landing_bytes", "bytes in the landing zone", registry=r)
        self.landing_full = Gauge(
            "citylake_ingest_landing_full", "1 while the landing bound holds flushes back", registry=r
        )
        self.event_lag = Gauge(
            "citylake_ingest_lag_seconds",
            "age of the oldest reading in the last flush",
            ["source"],
            registry=r,
        )
        self.freshest_lag = Gauge(
            "citylake_ingest_freshest_lag_seconds",
            "age of the newest reading in the last flush",
            ["source"],
            registry=r,
        )
        self.flush_errors = Counter("citylake_ingest_flush_errors", "failed landing writes", registry=r)
        self.metric_types_known = Gauge(
            "citylake_ingest_metric_types_known", "(source, metric) types fixed at first sight", registry=r
        )
        self.metric_types_evicted = Counter(
            "citylake_ingest_metric_types_evicted",
            "first-sight metric types forgotten at the metric_types_max bound",
            registry=r,
        )
        self.adapter_events = Counter(
            "citylake_ingest_adapter_events",
            "what an adapter counts itself (e.g. known_devices_evicted, known_devices)",
            ["source", "event"],
            registry=r,
        )
