"""``citylake scale``: the 100k-device run on this machine, and its report.

``citylake scale run`` starts the whole stack (mosquitto, one ingest process
per protocol, the streaming Flink jobs, the query service beside daprd with
its hot tier fed by the live feed), drives it with simulated MQTT, Modbus and
GB28181 devices at city rates and a steady query load for N minutes, samples
it every few seconds and writes a report directory (PNG plots, samples.csv and
samples.json, index.html). ``citylake scale report DIR`` rebuilds the report
from DIR/samples.json.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.pipelines.jobs import JOB_NAMES

if TYPE_CHECKING:
    # matplotlib (the report's) loads only when a command runs.
    from citylake_devstack.scalereport import Query, Report, RunRecord, Summary

app = typer.Typer(help="The 100k-device scale run and its report.", no_args_is_help=True)

JOBS_HELP = f"streaming Flink jobs, comma-separated: {', '.join(JOB_NAMES)}, or 'all'"


@app.command()
def run(
    config: ConfigOption = DEFAULT_CONFIG,
    devices: Annotated[int, typer.Option(min=3, help="simulated devices in all")] = 100_000,
    minutes: Annotated[float, typer.Option(min=0.1, help="minutes of load after the warm-up")] = 10.0,
    report: Annotated[
        Path | None, typer.Option(help="report directory (default <data_dir>/scale-report)")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="logs and data of the run (default <data_dir>/scale; emptied first)")
    ] = None,
    modbus: Annotated[int | None, typer.Option(min=0, help="Modbus meters (default 2% of --devices)")] = None,
    gb28181: Annotated[
        int | None, typer.Option(min=0, help="GB28181 devices (default 3% of --devices); the rest are MQTT")
    ] = None,
    mqtt_period: Annotated[float, typer.Option(min=0.1, help="seconds between a sensor's reports")] = 60.0,
    modbus_interval: Annotated[float, typer.Option(min=0.1, help="seconds between polls of a meter")] = 10.0,
    modbus_per_gateway: Annotated[int, typer.Option(min=1, max=247, help="meters behind one gateway")] = 125,
    gb28181_rate: Annotated[
        float, typer.Option(min=1, help="REGISTERs started per second (the storm)")
    ] = 300.0,
    keepalive: Annotated[float, typer.Option(min=1, help="GB28181 keepalive interval, seconds")] = 60.0,
    jobs: Annotated[str, typer.Option(help=JOBS_HELP)] = "all",
    checkpoint: Annotated[
        float,
        typer.Option(min=0.5, help="Flink checkpoint (lake commit) interval, s: bounds freshness"),
    ] = 2.0,
    separate_jobs: Annotated[
        bool,
        typer.Option(
            "--separate-jobs", help="a Flink job and JVM per job instead of one for all (the baseline)"
        ),
    ] = False,
    query_rate: Annotated[float, typer.Option(min=0.1, help="queries per second (open loop)")] = 200.0,
    direct: Annotated[
        bool, typer.Option("--direct", help="query the service directly instead of through its Dapr sidecar")
    ] = False,
    hot_window: Annotated[
        float, typer.Option(min=1, help="query service: seconds of recent readings its hot tier holds")
    ] = 600.0,
    sample: Annotated[float, typer.Option(min=1, help="seconds between samples")] = 5.0,
    marker_every: Annotated[float, typer.Option(min=0.1, help="seconds between freshness markers")] = 2.0,
    edge_box: Annotated[
        bool,
        typer.Option(
            "--edge-box",
            help="run the edge's processes (mosquitto, ingest, Flink, query, daprd) in a cgroup v1 of "
            "the edge node's size, with deploy/overlays/edge's settings; simulators stay outside (root)",
        ),
    ] = False,
    edge_box_cpus: Annotated[
        float, typer.Option(min=0.1, max=256, help="--edge-box: CPUs of the box (CFS quota)")
    ] = 2.0,
    edge_box_memory_mb: Annotated[
        int, typer.Option(min=256, help="--edge-box: memory limit of the box, MiB")
    ] = 4096,
) -> None:
    """Simulated devices at city rates through the whole pipeline under query
    load for N minutes; sampled into a report directory."""
    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.scale import ALL_JOBS, ScalePlan, ScaleRun, split_devices
    from citylake_devstack.scalereport import build_report

    setup_logging()
    loaded = load(config)
    chosen = (
        tuple(ALL_JOBS) if jobs.strip() == "all" else tuple(j.strip() for j in jobs.split(",") if j.strip())
    )
    unknown = [j for j in chosen if j not in ALL_JOBS]
    if unknown or not chosen:
        fail(f"--jobs: unknown job(s) {', '.join(unknown) or '(none)'}; known: {', '.join(ALL_JOBS)}", code=2)
    try:
        split = split_devices(devices, modbus, gb28181)
    except ValueError as exc:
        fail(str(exc), code=2)
    if edge_box:
        from citylake_devstack.scale.edgebox import EdgeBoxUnavailable, preflight

        try:
            preflight()  # before anything starts: root and the cgroup v1 controllers
        except EdgeBoxUnavailable as exc:
            fail(str(exc), code=2)
    plan = ScalePlan(
        devices=split,
        minutes=minutes,
        mqtt_period_s=mqtt_period,
        modbus_interval_s=modbus_interval,
        modbus_per_gateway=modbus_per_gateway,
        gb28181_rate=gb28181_rate,
        gb28181_keepalive_s=keepalive,
        jobs=chosen,
        checkpoint_s=checkpoint,
        combine=not separate_jobs,
        query_rate=query_rate,
        query_via_dapr=not direct,
        marker_every_s=marker_every,
        sample_s=sample,
        hot_window_s=hot_window,
        edge_box=edge_box,
        edge_box_cpus=edge_box_cpus,
        edge_box_memory_mb=edge_box_memory_mb,
        alert_rules=[r.model_dump(exclude_none=True) for r in loaded.config.pipelines.alerts],
    )
    data_dir = loaded.config.data_dir
    workdir = (workdir or data_dir / "scale").resolve()
    report_dir = (report or data_dir / "scale-report").resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    console.print(
        f"scale run: {plan.total:,} devices ({', '.join(f'{p} {n:,}' for p, n in split.items())}), "
        f"{minutes:g} min of load, jobs {', '.join(chosen)}; work directory {workdir}",
        highlight=False,
        soft_wrap=True,
    )
    view = _Progress(plan.minutes * 60, split)
    with Live(view.render(None), console=console, refresh_per_second=2, transient=False) as live:

        def status(text: str) -> None:
            view.step = text
            live.update(view.render(scale_run.record))
            if not console.is_terminal:
                console.print(f"[{time.strftime('%X')}] {text}", highlight=False)

        def on_sample(record: RunRecord) -> None:
            live.update(view.render(record))
            if not console.is_terminal:
                console.print(view.line(record), highlight=False, soft_wrap=True)

        scale_run = ScaleRun(plan, workdir, status=status, on_sample=on_sample)
        try:
            record = scale_run.run()
        except ComponentUnavailable as exc:  # pragma: no cover - run() catches these itself
            fail(str(exc))
    _conclude(build_report(record, report_dir), record, scale_run.failure)


def _conclude(written: Report, record: RunRecord, failure: str | None) -> None:
    """Print what the run found and exit non-zero when it failed or missed a goal."""
    _print_summary(written.summary, record)
    console.print(f"report: {written.html}", highlight=False, soft_wrap=True)
    left = record.info.stop_check.get("left_running") or []
    if left:
        console.print(f"[red]still running after stop:[/] {', '.join(left)}", highlight=False, soft_wrap=True)
    else:
        checked = record.info.stop_check.get("checked", 0)
        console.print(f"stopped cleanly: {checked} processes of the run checked, none left", highlight=False)
    if failure:
        fail(failure)
    if written.summary.missed and not record.info.interrupted:
        fail("the run missed: " + "; ".join(written.summary.missed))
    if record.info.interrupted:
        raise typer.Exit(130)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="a report directory with samples.json")],
) -> None:
    """Rebuild the plots, CSV and HTML of a report directory from its samples.json."""
    from citylake_devstack.scalereport import rebuild_report

    path = directory / "samples.json"
    if not path.exists():
        fail(f"{path} not found: give a directory written by `citylake scale run`", code=2)
    try:
        written = rebuild_report(directory)
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"{path}: not a scale run record ({exc})", code=2)
    console.print(f"report: {written.html}", highlight=False, soft_wrap=True)


class _Progress:
    """The live console view: a step line and the latest sample's figures."""

    def __init__(self, planned_s: float, devices: dict[str, int]) -> None:
        self.planned_s = planned_s
        self.devices = devices
        self.step = "starting"

    def _current(self, record: RunRecord) -> dict[str, str]:
        from citylake_devstack.scalereport.summary import landed_total, rates

        samples = record.samples
        last = samples[-1]
        window = samples[-2:]
        landed = rates(window, [landed_total(s) for s in window])[-1] if len(window) == 2 else math.nan
        lake = rates(window, [s.lake_rows for s in window])[-1] if len(window) == 2 else math.nan
        sent = last.counters.get("queries: sent", 0)
        lags = [m.lag_s for m in record.markers if m.lag_s is not None]
        busiest = sorted(last.processes.items(), key=lambda item: -item[1].cpu_percent)[:4]
        return {
            "time": f"{last.t:.0f}s of {self.planned_s:.0f}s",
            "online": ", ".join(
                f"{p} {last.devices_online.get(p, 0):,}/{n:,}" for p, n in self.devices.items()
            ),
            "landed": f"{landed_total(last):,.0f} readings ({landed:,.0f}/s); "
            f"lake {last.lake_rows:,.0f} ({lake:,.0f}/s)",
            "lag": ", ".join(f"{s} {v:.1f}s" for s, v in last.event_lag_s.items()) or "—",
            "freshness": f"last marker {lags[-1]:.1f}s" if lags else "no marker in the lake yet",
            # The load process reports counts as it goes; latencies come at the end.
            "queries": f"sent {sent:,.0f}, answered {last.counters.get('queries: answered', 0):,.0f}, "
            f"failed {last.counters.get('queries: failed (no answer or 5xx)', 0):,.0f}"
            if sent
            else "—",
            "cpu": f"machine {last.machine_cpu_percent:.0f}%; "
            + ", ".join(f"{name} {stat.cpu_percent:.0f}%" for name, stat in busiest),
            "memory": f"{last.mem_available_mb / 1024:.1f} GB available; "
            + ", ".join(
                f"{name} {stat.rss_mb:.0f} MB"
                for name, stat in sorted(last.processes.items(), key=lambda item: -item[1].rss_mb)[:3]
            ),
            **(
                {
                    "edge box": f"{last.box.get('memory_mb', 0):,.0f} MiB (peak "
                    f"{last.box.get('memory_peak_mb', 0):,.0f}, rss {last.box.get('rss_mb', 0):,.0f}), "
                    f"CPU {last.box.get('cpu_percent', 0):.0f}%, "
                    f"{last.box.get('throttled_periods_percent', 0):.0f}% throttled, "
                    f"OOM kills {last.box.get('oom_kills', 0):.0f}"
                }
                if last.box
                else {}
            ),
        }

    def render(self, record: RunRecord | None) -> Group:
        step = Text(f"● {self.step}", style="bold cyan")
        if record is None or not record.samples:
            return Group(step)
        table = Table(show_header=False, box=None, pad_edge=False)
        for key, value in self._current(record).items():
            table.add_row(Text(key, style="bold"), Text(value))
        return Group(step, table)

    def line(self, record: RunRecord) -> str:
        """One line per sample when the console is not a terminal (make, CI, a log file)."""
        values = self._current(record)
        return " | ".join(f"{k} {v}" for k, v in values.items())


def _recent(record: RunRecord, until: float) -> list[Query]:
    return [q for q in record.queries if until - 30 <= q.t <= until]


def _print_summary(summary: Summary, record: RunRecord) -> None:
    table = Table(title="scale run", show_header=False)
    table.add_row("devices online (end)", ", ".join(f"{p} {n:,}" for p, n in summary.devices_online.items()))
    table.add_row(
        "readings landed / in the lake",
        f"{summary.readings_landed_total:,.0f} / {summary.readings_in_lake:,.0f}",
    )
    table.add_row(
        "ingest rate peak / mean",
        f"{summary.peak_rate.get('total', 0):,.0f} / {summary.mean_rate.get('total', 0):,.0f} readings/s",
    )
    table.add_row("freshness p50 / p99", f"{summary.freshness_p50_s:.2f} / {summary.freshness_p99_s:.2f} s")
    table.add_row("query p50 / p99", f"{summary.query_p50_ms:.1f} / {summary.query_p99_ms:.1f} ms")
    table.add_row(
        "Flink JVMs RSS peak / mean",
        f"{summary.flink_jvm_rss_peak_mb:,.0f} / {summary.flink_jvm_rss_mean_mb:,.0f} MB (psutil, summed)",
    )
    box = summary.box
    if box is not None:
        table.add_row("edge box limits", f"{box.cpus:g} CPUs, {box.memory_limit_mb:,.0f} MiB (cgroup v1)")
        table.add_row(
            "edge box memory peak / mean",
            f"{box.memory_peak_mb:,.0f} / {box.memory_mean_mb:,.0f} MiB with page cache "
            f"(rss peak {box.rss_peak_mb:,.0f} MiB)",
        )
        table.add_row(
            "edge box CPU mean / peak",
            f"{box.cpu_mean:.0f}% / {box.cpu_peak:.0f}% of one core, "
            f"{box.throttled_periods_percent:.0f}% of periods throttled",
        )
        table.add_row("edge box OOM kills", str(box.oom_kills))
    for protocol, (planned, achieved, unit) in summary.load.items():
        table.add_row(f"load {protocol}", f"{achieved:,.0f} of {planned:,.0f} {unit} planned")
    table.add_row("machine CPU mean", f"{summary.machine_mean_cpu:.0f}% of one core ({summary.cores} cores)")
    for p in summary.processes[:6]:
        table.add_row(
            f"  {p.name}",
            f"CPU mean {p.mean_cpu:.0f}% peak {p.peak_cpu:.0f}%, RSS peak {p.peak_rss_mb:.0f} MB",
        )
    for finding in summary.findings:
        table.add_row("finding", finding)
    table.add_row("wall time", f"{record.info.wall_s:.0f} s (warm-up {record.info.warmup_s:.0f} s)")
    console.print(table)
