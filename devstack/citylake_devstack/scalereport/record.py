"""What a scale run measured: the file format the report is built from.

The orchestrator (``citylake_devstack.scale``) fills a ``RunRecord`` while the
run goes and writes it as ``samples.json``; ``build_report`` turns one into
plots, a CSV and an HTML page, and ``citylake scale report DIR`` rebuilds the
report from the JSON alone. Times are seconds since the load started (t = 0),
so warm-up is never part of a figure.

Samples hold snapshots: cumulative counters and current gauges, read every few
seconds. Rates and per-interval percentiles are derived from them (and from the
raw events: one entry per freshness marker and per query) by the report, so
nothing is averaged twice.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


@dataclass
class ProcessStat:
    """One process tree (a component and its children, e.g. a job's JVM)
    over the interval that ends at the sample."""

    cpu_percent: float  # of one core: 100 = one core busy for the whole interval
    rss_mb: float  # resident memory of the whole tree now
    processes: int  # how many processes the tree has
    top: str = ""  # the command using the most CPU in the tree over the interval


@dataclass
class Sample:
    t: float
    # Readings made durable by ingest, cumulative, by protocol (ingest /metrics).
    landed_rows: dict[str, float] = field(default_factory=dict)
    # Device events made durable by ingest, cumulative, by protocol.
    landed_events: dict[str, float] = field(default_factory=dict)
    # Readings visible in the lake (the catalog's snapshot), cumulative.
    lake_rows: float = 0.0
    # Rows of every lake table, cumulative (readings, readings_1m, ...).
    lake_tables: dict[str, float] = field(default_factory=dict)
    # Ingest's own gauges by source: age of the oldest / newest reading in its last flush.
    event_lag_s: dict[str, float] = field(default_factory=dict)
    freshest_lag_s: dict[str, float] = field(default_factory=dict)
    landing_bytes: float = 0.0
    devices_online: dict[str, int] = field(default_factory=dict)
    processes: dict[str, ProcessStat] = field(default_factory=dict)
    # The whole machine, in % of one core (0 .. 100 x cores), and what of it
    # the run's own processes do not explain (other work on a shared machine).
    machine_cpu_percent: float = 0.0
    steal_percent: float = 0.0
    mem_available_mb: float = 0.0
    # Cumulative error and drop counters by name; gauges of backlog by name.
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    # The edge box's cgroup (runs with --edge-box): memory in MiB (usage with
    # page cache, its peak, rss and cache apart), CPU in % of one core over the
    # interval, cumulative failcnt, OOM kills and throttling; and which of the
    # run's process trees had their root pid in the box at this sample.
    box: dict[str, float] = field(default_factory=dict)
    box_members: list[str] = field(default_factory=list)


@dataclass
class Marker:
    """One freshness marker: a reading acknowledged at the edge (MQTT PUBACK)
    at ``acked_at`` and first seen in the lake's snapshot at ``visible_at``."""

    seq: int
    acked_at: float
    visible_at: float | None = None

    @property
    def lag_s(self) -> float | None:
        return None if self.visible_at is None else self.visible_at - self.acked_at


@dataclass
class Query:
    """One request of the load generator: sent at ``t``; status 0 means no
    answer (timeout, refused connection, shed because too many were in flight)."""

    t: float
    kind: str
    latency_ms: float
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def error(self) -> bool:
        """A failure of the service: no answer or a 5xx (a 404 is an answer)."""
        return self.status == 0 or self.status >= 500


@dataclass
class RunInfo:
    started_at: str  # ISO 8601, when the load started
    planned_s: float
    duration_s: float = 0.0  # load phase as run
    warmup_s: float = 0.0  # start of the first process to t = 0
    wall_s: float = 0.0  # the whole command, start to everything stopped
    interrupted: bool = False
    plan: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What stopping found: processes of the run still alive afterwards.
    stop_check: dict[str, Any] = field(default_factory=dict)
    # After the load: readings ingest landed and the lake's readings rows.
    drain: dict[str, float] = field(default_factory=dict)
    workdir: str = ""
    # The edge box (empty without --edge-box): its cgroup and limits, which
    # processes were started in it, the edge settings the run was given.
    box: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    info: RunInfo
    samples: list[Sample] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)

    def to_json(self) -> str:
        document = {
            "format": FORMAT_VERSION,
            "info": asdict(self.info),
            "samples": [asdict(s) for s in self.samples],
            "markers": [[m.seq, m.acked_at, m.visible_at] for m in self.markers],
            # Compact rows: [t, kind, latency_ms, status]; thousands of them.
            "queries": [[round(q.t, 3), q.kind, round(q.latency_ms, 3), q.status] for q in self.queries],
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        document = json.loads(text)
        if document.get("format") != FORMAT_VERSION:
            raise ValueError(f"samples.json format {document.get('format')!r}, expected {FORMAT_VERSION}")
        samples = []
        for raw in document["samples"]:
            processes = {name: ProcessStat(**stat) for name, stat in raw.pop("processes").items()}
            samples.append(Sample(**raw, processes=processes))
        return cls(
            info=RunInfo(**document["info"]),
            samples=samples,
            markers=[
                Marker(int(s), float(a), None if v is None else float(v)) for s, a, v in document["markers"]
            ],
            queries=[Query(float(t), str(k), float(ms), int(st)) for t, k, ms, st in document["queries"]],
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(self.to_json())
        partial.replace(path)
        return path

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        return cls.from_json(path.read_text())
