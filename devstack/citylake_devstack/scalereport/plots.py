"""The report's figures, one PNG each, drawn with matplotlib's object API
(``Figure``, no pyplot: no global state, no GUI backend, safe in any thread)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from citylake_devstack.scalereport.record import ProcessStat, RunRecord, Sample
from citylake_devstack.scalereport.summary import (
    backlog,
    freshness_events,
    keys,
    landed_total,
    per_interval,
    query_events,
    rates,
)

SIZE = (9.0, 3.6)
DPI = 100
FRESHNESS_WINDOW_S = 30.0
OUTSIDE = "outside this run"


def _minutes(samples: Sequence[Sample]) -> list[float]:
    return [s.t / 60 for s in samples]


def _finish(fig: Figure, ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("minutes since the load started")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()


def ingest_rate(record: RunRecord) -> Figure:
    samples = record.samples
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    x = _minutes(samples)
    for protocol in keys([s.landed_rows for s in samples]):
        ax.plot(x, rates(samples, [s.landed_rows.get(protocol, 0.0) for s in samples]), label=protocol)
    for protocol in keys([s.landed_events for s in samples]):
        events = rates(samples, [s.landed_events.get(protocol, 0.0) for s in samples])
        ax.plot(x, events, ls=":", label=f"{protocol} device events")
    ax.plot(x, rates(samples, [landed_total(s) for s in samples]), label="landed, all", color="black", lw=1.5)
    ax.plot(
        x, rates(samples, [s.lake_rows for s in samples]), label="visible in the lake", color="grey", ls="--"
    )
    _finish(fig, ax, "Ingest rate: readings landed per second (ingest /metrics)", "readings/s")
    return fig


def lag(record: RunRecord) -> Figure:
    samples = record.samples
    fig = Figure(figsize=(SIZE[0], SIZE[1] * 1.8), dpi=DPI)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = _minutes(samples)
    for source in keys([s.event_lag_s for s in samples]):
        top.plot(x, [s.event_lag_s.get(source, math.nan) for s in samples], label=f"{source} oldest")
    for source in keys([s.freshest_lag_s for s in samples]):
        top.plot(
            x, [s.freshest_lag_s.get(source, math.nan) for s in samples], ls=":", label=f"{source} newest"
        )
    top.set_title(
        "Lag at the edge: age of the oldest / newest reading in each source's last flush", fontsize=11
    )
    top.set_ylabel("seconds")
    top.grid(True, alpha=0.3)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8, loc="upper left", ncols=2)
    bottom.plot(x, [s.landing_bytes / 1e6 for s in samples], label="landing zone (MB)", color="tab:blue")
    bottom.set_ylabel("landing MB", color="tab:blue")
    twin = bottom.twinx()
    twin.plot(x, [backlog(s) for s in samples], color="tab:red", label="landed, not yet in the lake")
    twin.set_ylabel("rows behind (pipeline)", color="tab:red")
    bottom.set_title("Landing zone size and the pipeline's backlog", fontsize=11)
    bottom.set_xlabel("minutes since the load started")
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def freshness(record: RunRecord) -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    visible = [(m.acked_at, m.lag_s) for m in record.markers if m.lag_s is not None]
    ax.scatter(
        [acked / 60 for acked, _ in visible],
        [lag for _, lag in visible],
        s=8,
        alpha=0.5,
        label="one marker (by ack time)",
    )
    # Markers are sparse (one every few seconds): percentiles over a rolling window.
    stats = per_interval(record.samples, freshness_events(record.markers), window_s=FRESHNESS_WINDOW_S)
    window = f"{FRESHNESS_WINDOW_S:.0f} s"
    ax.plot([s.t / 60 for s in stats], [s.p99 for s in stats], color="tab:red", label=f"p99, last {window}")
    ax.plot([s.t / 60 for s in stats], [s.p50 for s in stats], color="tab:green", label=f"p50, last {window}")
    lost = [m for m in record.markers if m.lag_s is None]
    if lost:
        ax.scatter(
            [m.acked_at / 60 for m in lost], [0] * len(lost), marker="x", color="black", label="never seen"
        )
    _finish(fig, ax, "Freshness: acknowledged at the edge -> visible in the lake", "seconds")
    return fig


def query_latency(record: RunRecord) -> Figure:
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    stats = per_interval(record.samples, query_events(record.queries))
    x = [s.t / 60 for s in stats]
    ax.plot(x, [s.p99 for s in stats], color="tab:red", label="p99, all")
    ax.plot(x, [s.p50 for s in stats], color="tab:green", label="p50, all")
    for kind in sorted({q.kind for q in record.queries}):
        kind_stats = per_interval(record.samples, query_events(record.queries, kind))
        ax.plot(x, [s.p99 for s in kind_stats], lw=0.8, ls="--", label=f"p99 {kind}")
    if any(s.errors for s in stats):
        twin = ax.twinx()
        twin.bar(x, [s.errors for s in stats], width=0.03, color="black", alpha=0.4, label="errors")
        twin.set_ylabel("errors per interval")
    ax.set_yscale("log")
    _finish(fig, ax, "Query latency per interval (load generator, through the query service)", "ms (log)")
    return fig


def _colors(count: int) -> list[tuple[float, float, float, float]]:
    palette = colormaps["tab20"]
    return [palette(i % 20) for i in range(count)]


def _stacked(
    record: RunRecord, value: Callable[[ProcessStat], float], rest: Sequence[float] | None
) -> tuple[Figure, Axes]:
    """Process trees stacked (the busiest at the bottom), legend outside on the right."""
    samples = record.samples
    fig = Figure(figsize=(SIZE[0] + 2.4, SIZE[1] * 1.4), dpi=DPI)
    ax = fig.add_subplot()
    x = _minutes(samples)
    names = keys([s.processes for s in samples])
    series = [[value(s.processes[n]) if n in s.processes else 0.0 for s in samples] for n in names]
    order = sorted(range(len(names)), key=lambda i: -sum(series[i]))
    labels = [names[i] for i in order]
    stacks = [series[i] for i in order]
    colors = _colors(len(labels))
    if rest is not None:
        labels.append(OUTSIDE)
        stacks.append(list(rest))
        colors.append((0.8, 0.8, 0.8, 1.0))
    if samples and stacks:  # samples without a process (none had started) draw nothing
        ax.stackplot(x, stacks, labels=labels, colors=colors, alpha=0.9)
    return fig, ax


def _legend_right(fig: Figure, ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("minutes since the load started")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()


def cpu(record: RunRecord) -> Figure:
    samples = record.samples
    outside = [
        max(0.0, s.machine_cpu_percent - sum(p.cpu_percent for p in s.processes.values())) for s in samples
    ]
    fig, ax = _stacked(record, lambda p: p.cpu_percent, outside)
    ax.plot(
        _minutes(samples), [s.machine_cpu_percent for s in samples], color="black", lw=1.2, label="machine"
    )
    cores = int(record.info.machine.get("cores", 0) or 0)
    if cores:
        ax.axhline(100 * cores, color="black", ls=":", lw=1)
    _legend_right(
        fig, ax, "CPU per process tree, stacked (% of one core; dotted: all cores)", "% of one core"
    )
    return fig


def memory(record: RunRecord) -> Figure:
    fig, ax = _stacked(record, lambda p: p.rss_mb, None)
    _legend_right(fig, ax, "Resident memory per process tree, stacked", "MB")
    return fig


def edge_box(record: RunRecord) -> Figure:
    """The box's memory against its limit, and its CPU against its quota."""
    samples = [s for s in record.samples if s.box]
    box = record.info.box
    fig = Figure(figsize=(SIZE[0], SIZE[1] * 1.8), dpi=DPI)
    memory_ax, cpu_ax = fig.subplots(2, 1, sharex=True)
    x = _minutes(samples)
    for key, label in (
        ("memory_mb", "usage (rss + page cache)"),
        ("rss_mb", "rss"),
        ("cache_mb", "page cache"),
        ("memory_peak_mb", "peak usage so far"),
    ):
        memory_ax.plot(x, [s.box.get(key, math.nan) for s in samples], label=label)
    if "memory_mb" in box:
        memory_ax.axhline(float(box["memory_mb"]), color="red", ls="--", lw=1, label="limit")
    memory_ax.set_ylabel("MiB")
    memory_ax.set_title(f"Edge box memory ({box.get('cgroup', '')})", fontsize=11)
    memory_ax.grid(True, alpha=0.3)
    memory_ax.legend(fontsize=8, loc="lower right", ncols=3)
    cpu_ax.plot(x, [s.box.get("cpu_percent", math.nan) for s in samples], label="CPU of the box")
    cpu_ax.plot(
        x, [s.box.get("throttled_periods_percent", math.nan) for s in samples], label="% of periods throttled"
    )
    if "cpus" in box:
        cpu_ax.axhline(100 * float(box["cpus"]), color="red", ls="--", lw=1, label="quota")
    _finish(fig, cpu_ax, "Edge box CPU (% of one core) and throttling", "%")
    return fig


def devices_online(record: RunRecord) -> Figure:
    samples = record.samples
    fig = Figure(figsize=SIZE, dpi=DPI)
    ax = fig.add_subplot()
    x = _minutes(samples)
    for protocol in keys([s.devices_online for s in samples]):
        ax.plot(x, [s.devices_online.get(protocol, 0) for s in samples], label=protocol)
    ax.set_yscale("symlog", linthresh=10)
    _finish(fig, ax, "Devices online by protocol (seen reporting in the landing zone)", "devices (log)")
    return fig


FIGURES: dict[str, tuple[str, Callable[[RunRecord], Figure]]] = {
    "ingest_rate": ("Ingest rate", ingest_rate),
    "lag": ("Lag", lag),
    "freshness": ("Freshness", freshness),
    "query_latency": ("Query latency", query_latency),
    "cpu": ("CPU", cpu),
    "memory": ("Memory", memory),
    "devices_online": ("Devices online", devices_online),
    "edge_box": ("Edge box", edge_box),
}
# Figures drawn only when the record has their data.
OPTIONAL: dict[str, Callable[[RunRecord], bool]] = {"edge_box": lambda r: any(s.box for s in r.samples)}


def write_figures(record: RunRecord, directory: Path) -> dict[str, Path]:
    """Every figure as ``<directory>/<name>.png``; returns name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (_, draw) in FIGURES.items():
        if name in OPTIONAL and not OPTIONAL[name](record):
            continue
        path = directory / f"{name}.png"
        draw(record).savefig(path, format="png")
        written[name] = path
    return written
