"""Figures derived from a ``RunRecord``: rates from counters, percentiles per
interval and over the run, peaks per process, and where the machine saturated.

Pure functions over the record; the plots, the CSV and the HTML page all use
these, so every number appears once and means the same everywhere.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from citylake_devstack.scalereport.record import Marker, Query, RunRecord, Sample

# A single-threaded Python process cannot go past one core; a component that
# averages this much of one is the bottleneck of its part of the path.
SATURATED_CORE_PERCENT = 85.0
# The machine as a whole: this share of all cores busy on average.
SATURATED_MACHINE_SHARE = 0.90
# The sampler's gauge of the Flink mini-cluster JVMs' resident memory, summed.
FLINK_JVM_RSS = "flink JVMs: RSS MB"
# Issue 12's goals; a run that misses one (or whose load fell short) fails.
GOAL_FRESHNESS_P99_S = 10.0
GOAL_FLINK_JVM_RSS_MB = 3072.0
GOAL_QUERY_P99_MS = 50.0
# The achieved share of planned load below which a run's load "fell short".
LOAD_ACHIEVED_SHARE = 0.95


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (no interpolation); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[min(len(ordered) - 1, rank)]


def rates(samples: Sequence[Sample], values: Sequence[float]) -> list[float]:
    """Per-second rate of a cumulative series over each sample's interval. The
    first sample is the baseline (a run takes it as the load starts, t = 0,
    with whatever the warm-up counted): its rate is 0."""
    out = [0.0] if samples else []
    # Counters only grow: a scrape that failed (read as 0) must not make the
    # next interval look like the whole run's rows arrived at once.
    high = list(itertools.accumulate(values, max))
    for i in range(1, len(samples)):
        dt = samples[i].t - samples[i - 1].t
        out.append((high[i] - high[i - 1]) / dt if dt > 0 else 0.0)
    return out


def keys(*groups: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys of all the mappings, in first-seen order."""
    seen: dict[str, None] = {}
    for mappings in groups:
        for mapping in mappings:
            seen.update(dict.fromkeys(mapping))
    return list(seen)


def protocols(samples: Sequence[Sample]) -> list[str]:
    return keys([s.landed_rows for s in samples], [s.devices_online for s in samples])


def landed_total(sample: Sample) -> float:
    return sum(sample.landed_rows.values())


@dataclass(frozen=True)
class IntervalStats:
    """Percentiles of the events that fall in one sample's interval."""

    t: float
    count: int
    p50: float
    p99: float
    errors: int = 0


def per_interval(
    samples: Sequence[Sample], events: Sequence[tuple[float, float, bool]], window_s: float | None = None
) -> list[IntervalStats]:
    """Percentiles of (t, value, is_error) events per sample: those in the
    sample's interval (t_prev, t], or with ``window_s`` in (t - window_s, t]
    (a rolling window, for sparse events such as freshness markers)."""
    out = []
    ordered = sorted(events)
    times = [e[0] for e in ordered]
    previous = -math.inf
    for sample in samples:
        start = previous if window_s is None else sample.t - window_s
        bucket = ordered[bisect.bisect_right(times, start) : bisect.bisect_right(times, sample.t)]
        values = [v for _, v, error in bucket if not error]
        errors = len(bucket) - len(values)
        out.append(
            IntervalStats(sample.t, len(bucket), quantile(values, 0.5), quantile(values, 0.99), errors)
        )
        previous = sample.t
    return out


def freshness_events(markers: Sequence[Marker]) -> list[tuple[float, float, bool]]:
    """(visible_at, lag, False) per visible marker: bucketed by when it became visible."""
    return [
        (m.visible_at, m.lag_s, False) for m in markers if m.visible_at is not None and m.lag_s is not None
    ]


def query_events(queries: Sequence[Query], kind: str | None = None) -> list[tuple[float, float, bool]]:
    """(sent at, latency, is error) per query; the latency of a failed one is not a latency."""
    return [(q.t, q.latency_ms, q.error) for q in queries if kind is None or q.kind == kind]


@dataclass(frozen=True)
class ProcessFigures:
    name: str
    mean_cpu: float
    peak_cpu: float
    mean_rss_mb: float
    peak_rss_mb: float
    top: str


def measured(samples: Sequence[Sample]) -> Sequence[Sample]:
    """The samples that close an interval: all but the baseline (CPU is a
    difference between two samples; the first has none before it)."""
    return samples[1:] if len(samples) > 1 else samples


def process_figures(samples: Sequence[Sample]) -> list[ProcessFigures]:
    """Per component, ordered by mean CPU (the busiest first)."""
    figures = []
    samples = measured(samples)
    for name in keys([s.processes for s in samples]):
        stats = [s.processes[name] for s in samples if name in s.processes]
        cpus = [p.cpu_percent for p in stats]
        rss = [p.rss_mb for p in stats]
        tops = [p.top for p in stats if p.top]
        figures.append(
            ProcessFigures(
                name,
                sum(cpus) / len(cpus),
                max(cpus),
                sum(rss) / len(rss),
                max(rss),
                max(set(tops), key=tops.count) if tops else "",
            )
        )
    return sorted(figures, key=lambda f: -f.mean_cpu)


@dataclass(frozen=True)
class BoxFigures:
    """The edge box (--edge-box): its limits and what its cgroup counted.
    Memory is the kernel's charge to the box: usage includes the page cache
    of the files its processes write and read (reclaimable), so rss and cache
    are shown apart; the peak is memory.max_usage_in_bytes, warm-up included."""

    cpus: float
    memory_limit_mb: float
    memory_peak_mb: float
    memory_mean_mb: float
    rss_peak_mb: float
    cache_peak_mb: float
    cpu_mean: float  # % of one core, over the load
    cpu_peak: float
    throttled_s: float  # time the box's processes were held back by the CPU quota, whole run
    throttled_periods_percent: float  # mean share of CFS periods that throttled, over the load
    oom_kills: int
    failcnt: int
    inside: list[str]  # the process trees started in the box
    not_seen_inside: list[str]  # of those, never seen in its cgroup.procs at a sample


def box_figures(record: RunRecord) -> BoxFigures | None:
    box = record.info.box
    samples = [s for s in record.samples if s.box]
    if not box or not samples:
        return None
    intervals = measured(samples)
    last = samples[-1].box
    seen = {name for s in samples for name in s.box_members}
    inside = [str(name) for name in box.get("inside", [])]

    def series(key: str, of: Sequence[Sample] = samples) -> list[float]:
        return [s.box.get(key, 0.0) for s in of]

    return BoxFigures(
        cpus=float(box.get("cpus", math.nan)),
        memory_limit_mb=float(box.get("memory_mb", math.nan)),
        memory_peak_mb=max(series("memory_peak_mb")),
        memory_mean_mb=sum(series("memory_mb")) / len(samples),
        rss_peak_mb=max(series("rss_mb")),
        cache_peak_mb=max(series("cache_mb")),
        cpu_mean=sum(series("cpu_percent", intervals)) / len(intervals),
        cpu_peak=max(series("cpu_percent", intervals)),
        throttled_s=last.get("throttled_s", 0.0),
        throttled_periods_percent=sum(series("throttled_periods_percent", intervals)) / len(intervals),
        oom_kills=int(max(series("oom_kills"))),
        failcnt=int(max(series("failcnt"))),
        inside=inside,
        not_seen_inside=[name for name in inside if name not in seen],
    )


@dataclass
class Summary:
    """The one-page figures."""

    duration_s: float = 0.0
    devices_planned: dict[str, int] = field(default_factory=dict)
    devices_online: dict[str, int] = field(default_factory=dict)  # at the end
    devices_online_peak: dict[str, int] = field(default_factory=dict)
    readings_landed: dict[str, float] = field(default_factory=dict)
    readings_landed_total: float = 0.0  # during the load
    readings_landed_with_warmup: float = 0.0
    events_landed: dict[str, float] = field(default_factory=dict)  # device events during the load
    readings_in_lake: float = 0.0
    lake_tables: dict[str, float] = field(default_factory=dict)
    peak_rate: dict[str, float] = field(default_factory=dict)  # readings landed/s, by protocol and "total"
    mean_rate: dict[str, float] = field(default_factory=dict)
    lake_peak_rate: float = 0.0
    lake_mean_rate: float = 0.0
    markers: int = 0
    markers_visible: int = 0
    freshness_p50_s: float = math.nan
    freshness_p99_s: float = math.nan
    freshness_max_s: float = math.nan
    queries: int = 0
    query_errors: int = 0
    query_not_found: int = 0
    query_rate: float = 0.0
    query_rate_planned: float = 0.0
    query_p50_ms: float = math.nan
    query_p99_ms: float = math.nan
    query_kinds: dict[str, tuple[int, float, float, int]] = field(default_factory=dict)  # n, p50, p99, errors
    max_event_lag_s: dict[str, float] = field(default_factory=dict)
    final_backlog_rows: float = 0.0
    peak_backlog_rows: float = 0.0
    landing_bytes: float = 0.0
    processes: list[ProcessFigures] = field(default_factory=list)
    machine_mean_cpu: float = 0.0
    machine_peak_cpu: float = 0.0
    other_mean_cpu: float = 0.0
    steal_mean: float = 0.0
    cores: int = 0
    errors: dict[str, float] = field(default_factory=dict)
    flink_jvm_rss_peak_mb: float = math.nan
    flink_jvm_rss_mean_mb: float = math.nan
    # By protocol: (planned, achieved, unit): readings/s for polled and
    # reporting devices, devices online for GB28181 (keepalives, no readings).
    load: dict[str, tuple[float, float, str]] = field(default_factory=dict)
    box: BoxFigures | None = None  # runs with --edge-box
    findings: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # goals missed and load short: the run fails


def backlog(sample: Sample) -> float:
    """Readings landed but not yet visible in the lake (the pipeline's backlog)."""
    return max(0.0, landed_total(sample) - sample.lake_rows)


def summarize(record: RunRecord) -> Summary:
    samples = record.samples
    info = record.info
    out = Summary(duration_s=info.duration_s, cores=int(info.machine.get("cores", 0) or 0))
    out.devices_planned = {k: int(v) for k, v in info.plan.get("devices", {}).items()}
    if samples:
        _from_samples(out, samples)
    _from_events(out, record)
    if info.drain:
        out.final_backlog_rows = max(0.0, info.drain.get("landed", 0.0) - info.drain.get("in_lake", 0.0))
    _load(out, info.plan)
    out.box = box_figures(record)
    out.findings = findings(record, out)
    out.missed = missed_goals(out)
    return out


def _load(out: Summary, plan: Mapping[str, Any]) -> None:
    expected = plan.get("expected_readings_per_s", {})
    for protocol, planned_devices in out.devices_planned.items():
        if not planned_devices:
            continue
        if protocol in expected:
            out.load[protocol] = (
                float(expected[protocol]),
                out.mean_rate.get(protocol, 0.0),
                "readings/s",
            )
        else:
            out.load[protocol] = (
                float(planned_devices),
                float(out.devices_online_peak.get(protocol, 0)),
                "devices online",
            )


def missed_goals(summary: Summary) -> list[str]:
    """What makes the run fail: a protocol's load short of its plan, or a goal missed."""
    missed = []
    for protocol, (planned, achieved, unit) in summary.load.items():
        if planned > 0 and achieved < LOAD_ACHIEVED_SHARE * planned:
            missed.append(
                f"{protocol} load short: {achieved:,.0f} of {planned:,.0f} {unit} planned "
                f"({100 * achieved / planned:.0f}%, below {100 * LOAD_ACHIEVED_SHARE:.0f}%)"
            )
    if not summary.freshness_p99_s <= GOAL_FRESHNESS_P99_S:  # NaN (no marker seen) misses too
        missed.append(f"freshness p99 {summary.freshness_p99_s:.1f} s, goal <= {GOAL_FRESHNESS_P99_S:g} s")
    if summary.markers and summary.markers_visible < summary.markers:
        missed.append(f"{summary.markers - summary.markers_visible} freshness markers never reached the lake")
    missed += _missed_query_goals(summary)
    if summary.final_backlog_rows > 0:
        missed.append(
            f"{summary.final_backlog_rows:,.0f} landed readings not in the lake when the run ended "
            "(after the drain; redelivered duplicates, deduplicated by the lake, count here too)"
        )
    if summary.flink_jvm_rss_peak_mb > GOAL_FLINK_JVM_RSS_MB:
        missed.append(
            f"Flink JVMs peak RSS {summary.flink_jvm_rss_peak_mb:,.0f} MB, "
            f"goal <= {GOAL_FLINK_JVM_RSS_MB:,.0f} MB"
        )
    box = summary.box
    if box is not None:
        if box.oom_kills:
            missed.append(f"{box.oom_kills} OOM kill(s) in the edge box ({box.memory_limit_mb:,.0f} MiB)")
        if box.not_seen_inside:
            # Then the box did not measure the edge: say so rather than report it.
            missed.append(f"edge processes never seen in the box: {', '.join(box.not_seen_inside)}")
    return missed


def _missed_query_goals(summary: Summary) -> list[str]:
    """The query load's goals: none failed, p99 under the goal, the planned rate reached."""
    missed: list[str] = []
    if summary.queries:
        if summary.query_errors:
            missed.append(f"{summary.query_errors:,} of {summary.queries:,} queries failed or timed out")
        if not summary.query_p99_ms <= GOAL_QUERY_P99_MS:
            missed.append(f"query p99 {summary.query_p99_ms:,.1f} ms, goal <= {GOAL_QUERY_P99_MS:g} ms")
    planned_rate = summary.query_rate_planned
    if planned_rate > 0 and summary.query_rate < LOAD_ACHIEVED_SHARE * planned_rate:
        missed.append(
            f"query load short: {summary.query_rate:,.1f} of {planned_rate:,.1f} queries/s planned "
            f"({100 * summary.query_rate / planned_rate:.0f}%, below {100 * LOAD_ACHIEVED_SHARE:.0f}%)"
        )
    return missed


def _from_samples(out: Summary, samples: Sequence[Sample]) -> None:
    if samples:
        last = samples[-1]
        names = protocols(samples)
        out.devices_online = dict(last.devices_online)
        out.devices_online_peak = {p: max(s.devices_online.get(p, 0) for s in samples) for p in names}
        first = samples[0]
        # Counted from the first sample (t = 0, the load's start): rows the
        # warm-up landed are not the load's.
        out.readings_landed = {p: v - first.landed_rows.get(p, 0.0) for p, v in last.landed_rows.items()}
        out.events_landed = {p: v - first.landed_events.get(p, 0.0) for p, v in last.landed_events.items()}
        out.readings_landed_total = landed_total(last) - landed_total(first)
        out.readings_landed_with_warmup = landed_total(last)
        out.readings_in_lake = last.lake_rows
        out.lake_tables = dict(last.lake_tables)
        span = last.t - first.t if last.t > first.t else 1.0
        for name in [*names, "total"]:
            series = [landed_total(s) if name == "total" else s.landed_rows.get(name, 0.0) for s in samples]
            per_s = rates(samples, series)
            out.peak_rate[name] = max(per_s, default=0.0)
            out.mean_rate[name] = (series[-1] - series[0]) / span
        lake = rates(samples, [s.lake_rows for s in samples])
        out.lake_peak_rate = max(lake, default=0.0)
        out.lake_mean_rate = (last.lake_rows - first.lake_rows) / span
        for source in keys([s.event_lag_s for s in samples]):
            out.max_event_lag_s[source] = max(s.event_lag_s.get(source, 0.0) for s in samples)
        backlogs = [backlog(s) for s in samples]
        out.final_backlog_rows = backlogs[-1]
        out.peak_backlog_rows = max(backlogs)
        out.landing_bytes = last.landing_bytes
        out.processes = process_figures(samples)
        intervals = measured(samples)
        machine = [s.machine_cpu_percent for s in intervals]
        out.machine_mean_cpu = sum(machine) / len(machine)
        out.machine_peak_cpu = max(machine)
        ours = [sum(p.cpu_percent for p in s.processes.values()) for s in intervals]
        out.other_mean_cpu = max(0.0, out.machine_mean_cpu - sum(ours) / len(ours))
        out.steal_mean = sum(s.steal_percent for s in intervals) / len(intervals)
        out.errors = dict(last.counters)
        jvm = [s.gauges[FLINK_JVM_RSS] for s in samples if FLINK_JVM_RSS in s.gauges]
        if jvm:
            out.flink_jvm_rss_peak_mb = max(jvm)
            out.flink_jvm_rss_mean_mb = sum(jvm) / len(jvm)


def _from_events(out: Summary, record: RunRecord) -> None:
    info = record.info
    out.markers = len(record.markers)
    lags = [m.lag_s for m in record.markers if m.lag_s is not None]
    out.markers_visible = len(lags)
    out.freshness_p50_s = quantile(lags, 0.5)
    out.freshness_p99_s = quantile(lags, 0.99)
    out.freshness_max_s = max(lags, default=math.nan)
    queries = record.queries
    out.queries = len(queries)
    out.query_errors = sum(q.error for q in queries)
    out.query_not_found = sum(q.status == 404 for q in queries)
    out.query_rate = len(queries) / info.duration_s if info.duration_s > 0 else 0.0
    out.query_rate_planned = float(info.plan.get("query_rate", 0.0) or 0.0)
    answered = [q.latency_ms for q in queries if not q.error]
    out.query_p50_ms = quantile(answered, 0.5)
    out.query_p99_ms = quantile(answered, 0.99)
    for kind in sorted({q.kind for q in queries}):
        of_kind = [q for q in queries if q.kind == kind]
        latencies = [q.latency_ms for q in of_kind if not q.error]
        out.query_kinds[kind] = (
            len(of_kind),
            quantile(latencies, 0.5),
            quantile(latencies, 0.99),
            sum(q.error for q in of_kind),
        )


def findings(record: RunRecord, summary: Summary) -> list[str]:
    """Plain sentences on where the run saturated or fell behind, if it did."""
    found = []
    cores = summary.cores or 1
    if summary.machine_mean_cpu >= SATURATED_MACHINE_SHARE * 100 * cores:
        found.append(
            f"machine saturated: all {cores} cores {summary.machine_mean_cpu / cores:.0f}% busy on average "
            f"(peak {summary.machine_peak_cpu / cores:.0f}%); {summary.other_mean_cpu:.0f}% of one core "
            "went to work outside this run"
        )
    for p in summary.processes:
        if p.mean_cpu >= SATURATED_CORE_PERCENT:
            found.append(
                f"{p.name} at {p.mean_cpu:.0f}% of one core on average "
                f"(peak {p.peak_cpu:.0f}%, mostly {p.top})"
            )
    samples = record.samples
    if len(samples) >= 4:
        half = samples[len(samples) // 2 :]
        first, last = backlog(half[0]), backlog(half[-1])
        landed_rate = summary.mean_rate.get("total", 0.0)
        dt = half[-1].t - half[0].t
        growth = (last - first) / dt if dt > 0 else 0.0
        if landed_rate > 0 and growth > 0.05 * landed_rate:
            found.append(
                f"pipeline falling behind: readings landed but not in the lake grew by {growth:.0f}/s over "
                f"the second half ({first:.0f} -> {last:.0f} rows)"
            )
        for source in keys([s.event_lag_s for s in half]):
            lags = [s.event_lag_s.get(source, 0.0) for s in half]
            if lags[-1] > 30 and lags[-1] > 2 * max(1.0, lags[0]):
                found.append(
                    f"ingest source {source} falling behind: oldest reading {lags[-1]:.0f}s old at the end"
                )
    planned = summary.devices_planned
    for protocol, count in planned.items():
        online = summary.devices_online.get(protocol, 0)
        if count and online < 0.99 * count:
            found.append(f"{protocol}: {online} of {count} devices online at the end")
    if summary.markers and summary.markers_visible < summary.markers:
        found.append(
            f"{summary.markers - summary.markers_visible} of {summary.markers} freshness markers "
            "never seen in the lake"
        )
    box = summary.box
    if box is not None and box.throttled_periods_percent >= 50:
        found.append(
            f"edge box CPU-bound: {box.throttled_periods_percent:.0f}% of CFS periods throttled on average "
            f"({box.throttled_s:.0f} s held back by the {box.cpus:g}-CPU quota)"
        )
    if summary.queries and summary.query_errors > 0.01 * summary.queries:
        found.append(f"{summary.query_errors} of {summary.queries} queries failed (no answer or 5xx)")
    return found
