"""The soak: days of a site compressed into minutes, through `citylake run`.

Simulated devices report faster than real time (their clock runs from
`--days` ago up to now in `--minutes`), through mosquitto, into a site
running ingest, the streaming `readings` and `rollups` jobs and lake
maintenance (compaction, retention, vacuum, landing collection). Every
`--sample-s` the run samples landing, lake and checkpoint bytes, each unit's
resident memory and the lake's row count. At the end it waits for the lake to
hold every acknowledged reading and checks, against the publisher's own
manifest: the count, the distinct keys (nothing twice), the sum of values,
and that landing stayed under its bound the whole time. Plots, samples and
a summary go to `--report`; the exit code is non-zero when a check failed.

    python bench/soak.py                       # 5 days of a 10k-device site in 20 minutes
    # the short version make test runs (tests/integration/test_soak_short.py):
    python bench/soak.py --devices 300 --days 0.5 --minutes 1 --replay-window-s 20 --sample-s 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from ruamel.yaml import YAML

from citylake.schemas import DataLayout
from citylake_devstack.components import start_mosquitto
from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port

GATEWAYS = 50
METRICS = ("temperature", "humidity", "pm25", "noise")


@dataclass
class Plan:
    devices: int
    days: float
    minutes: float
    interval_min: float
    metrics: int

    @property
    def speed(self) -> float:
        """Simulated seconds per real second."""
        return self.days * 86_400 / (self.minutes * 60)

    @property
    def readings(self) -> int:
        return int(self.devices * self.days * 1440 / self.interval_min) * self.metrics

    @property
    def rate(self) -> float:
        return self.readings / (self.minutes * 60)


@dataclass
class Manifest:
    """What the broker acknowledged (QoS 1): the soak's ground truth."""

    messages: int = 0
    readings: int = 0
    value_sum: float = 0.0
    first_ts: int | None = None
    last_ts: int | None = None


@dataclass
class Sample:
    t: float
    sim_day: float
    acked_readings: int
    lake_readings: int
    landing_bytes: int
    landing_files: int
    lake_bytes: int
    checkpoint_bytes: int
    rss_mb: dict[str, float] = field(default_factory=dict)


def _files(path: Path) -> Iterator[Path]:
    # os.walk, not rglob: Flink and the collector remove directories while
    # this walks them, and rglob raises on a directory gone mid-walk.
    for parent, _, names in os.walk(path):
        for name in names:
            yield Path(parent, name)


def landing_names(path: Path) -> set[str]:
    return {p.name for p in _files(path) if p.suffix == ".parquet" and not p.name.startswith(".")}


def dir_bytes(path: Path) -> tuple[int, int]:
    total = files = 0
    for item in _files(path):
        with contextlib.suppress(FileNotFoundError):
            total += item.stat().st_size
            files += 1
    return total, files


def site_config(
    workdir: Path,
    broker_url: str,
    plan: Plan,
    landing_bound: int,
    maintenance: bool = True,
    replay_window_s: float = 60.0,
) -> dict[str, Any]:
    return {
        "site": "soak-site",
        "data_dir": str(workdir / "data"),
        "sources": [
            {
                "name": "gateways",
                "type": "mqtt",
                "url": broker_url,
                "qos": 1,
                # Gateways forward their devices' readings in batches: the
                # device id travels in each reading, not in the topic.
                "topics": [{"template": "soak/{gateway}/telemetry", "timestamp_field": "ts"}],
            }
        ],
        "ingest": {"landing_max_bytes": landing_bound, "flush_max_age_s": 1.0},
        "pipelines": {
            "flink": {"parallelism": 1, "checkpoint_interval_s": 5, "monitor_interval_s": 1},
            "jobs": ["readings", "rollups"],
        },
        # Landing files go once the lake holds their rows and the replay window has passed.
        "landing": {
            "replay_window_h": replay_window_s / 3600,
            "collect_every_s": collect_every_s(replay_window_s),
        },
        "lake": {
            "maintenance": {"compact_every_s": 30, "vacuum_every_s": 30, "retain_every_s": 300},
            # Keep every simulated day: the soak checks that nothing is lost.
            "retention_days": {"readings": math.ceil(plan.days) + 2},
            "vacuum_grace_s": 30,
        },
        "run": {"health_port": free_port(), "ingest_metrics_port": free_port(), "maintenance": maintenance},
    }


def collect_every_s(replay_window_s: float) -> float:
    """A few collections per replay window, and not more often than every 5 s."""
    return max(5.0, min(10.0, replay_window_s / 4))


class Fleet:
    """``devices`` sensors behind ``GATEWAYS`` gateways; each due reading is
    published once, in its gateway's next batch, and counted when acked."""

    def __init__(self, url: str, plan: Plan, seed: int = 11) -> None:
        self.plan = plan
        self.manifest = Manifest()
        self.rng = random.Random(seed)
        parts = urlsplit(url)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"soak-fleet-{time.monotonic_ns()}")
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.connect(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=60)
        self.client.loop_start()
        self.stop = threading.Event()
        self.sim_start_ms = int((time.time() - plan.days * 86_400) * 1000)
        interval_ms = int(plan.interval_min * 60_000)
        # Devices are spread over the interval so the load is steady.
        self.next_ms = [self.sim_start_ms + i * interval_ms // plan.devices for i in range(plan.devices)]
        self.interval_ms = interval_ms
        self.sim_now_ms = self.sim_start_ms

    def run(self, tick_s: float = 0.5) -> None:
        started = time.monotonic()
        end_ms = self.sim_start_ms + int(self.plan.days * 86_400_000)
        metrics = METRICS[: self.plan.metrics]
        while not self.stop.is_set():
            elapsed = time.monotonic() - started
            self.sim_now_ms = min(end_ms, self.sim_start_ms + int(elapsed * self.plan.speed * 1000))
            batches: dict[int, list[dict[str, object]]] = {}
            for device in range(self.plan.devices):
                while self.next_ms[device] <= self.sim_now_ms and self.next_ms[device] < end_ms:
                    ts = self.next_ms[device]
                    item: dict[str, object] = {"device_id": f"sensor-{device:05d}", "ts": ts}
                    for m, metric in enumerate(metrics):
                        item[metric] = round(
                            20 + 10 * math.sin(ts / 3.6e6 + device + m) + self.rng.random(), 3
                        )
                    batches.setdefault(device % GATEWAYS, []).append(item)
                    self.next_ms[device] += self.interval_ms
            pending = []
            for gateway, items in batches.items():
                for start in range(0, len(items), 200):
                    chunk = items[start : start + 200]
                    info = self.client.publish(f"soak/gw-{gateway:03d}/telemetry", json.dumps(chunk), qos=1)
                    pending.append((info, chunk))
            for info, chunk in pending:
                info.wait_for_publish(timeout=60)
                if not info.is_published():
                    continue
                self.manifest.messages += 1
                for item in chunk:
                    self.manifest.readings += len(metrics)
                    self.manifest.value_sum += sum(float(str(item[m])) for m in metrics)
                    ts = int(str(item["ts"]))
                    self.manifest.first_ts = min(self.manifest.first_ts or ts, ts)
                    self.manifest.last_ts = max(self.manifest.last_ts or ts, ts)
            if self.sim_now_ms >= end_ms:
                return
            time.sleep(max(0.0, tick_s - (time.monotonic() - started - elapsed)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def lake_readings(data_dir: Path) -> tuple[int, int, float]:
    """Count, distinct keys and value sum of the lake's readings (a fresh Lake each call)."""
    from citylake.lake import Lake

    lake = Lake(DataLayout(data_dir))
    try:
        row = (
            lake.cursor()
            .execute(
                "SELECT count(*), count(DISTINCT (device_id, metric, ts)), coalesce(sum(value), 0) "
                "FROM readings"
            )
            .fetchone()
        )
    except duckdb.Error:
        return 0, 0, 0.0
    finally:
        lake.close()
    assert row is not None
    return int(row[0]), int(row[1]), float(row[2])


def sample(started: float, data_dir: Path, fleet: Fleet, health_url: str, client: httpx.Client) -> Sample:
    layout = DataLayout(data_dir)
    landing, landing_files = dir_bytes(layout.landing_root)
    lake, _ = dir_bytes(layout.lake_root)
    checkpoints, _ = dir_bytes(layout.checkpoints)
    rss: dict[str, float] = {}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        units = client.get(health_url).json()["units"]
        rss = {name: float(u["rss_mb"]) for name, u in units.items()}
    return Sample(
        t=round(time.monotonic() - started, 1),
        sim_day=round((fleet.sim_now_ms - fleet.sim_start_ms) / 86_400_000, 3),
        acked_readings=fleet.manifest.readings,
        lake_readings=lake_readings(data_dir)[0],
        landing_bytes=landing,
        landing_files=landing_files,
        lake_bytes=lake,
        checkpoint_bytes=checkpoints,
        rss_mb=rss,
    )


def plot(samples: list[Sample], report: Path, landing_bound: int) -> list[Path]:
    from matplotlib.figure import Figure

    x = [s.t / 60 for s in samples]
    figures = []

    def figure(name: str, title: str, ylabel: str) -> tuple[Figure, Any]:
        fig = Figure(figsize=(9, 3.6), dpi=100)
        ax = fig.add_subplot()
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("minutes since the load started")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        figures.append(report / f"{name}.png")
        return fig, ax

    fig, ax = figure("disk", "Disk: landing stays under its bound while the lake grows", "MiB")
    ax.plot(x, [s.landing_bytes / 2**20 for s in samples], label="landing")
    ax.plot(x, [s.lake_bytes / 2**20 for s in samples], label="lake")
    ax.axhline(landing_bound / 2**20, color="red", ls="--", label="landing bound (ingest.landing_max_bytes)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(figures[-1])

    fig, ax = figure("state", "Flink checkpoints on disk (all jobs' retained checkpoints)", "MiB")
    ax.plot(x, [s.checkpoint_bytes / 2**20 for s in samples], label="checkpoints/")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(figures[-1])

    fig, ax = figure("memory", "Resident memory per unit (process trees)", "MiB")
    for unit in sorted({u for s in samples for u in s.rss_mb}):
        ax.plot(x, [s.rss_mb.get(unit, math.nan) for s in samples], label=unit)
    ax.legend(fontsize=8, loc="upper left", ncols=2)
    fig.tight_layout()
    fig.savefig(figures[-1])

    fig, ax = figure("rows", "Readings acknowledged by the broker and visible in the lake", "readings")
    ax.plot(x, [s.acked_readings for s in samples], label="acknowledged")
    ax.plot(x, [s.lake_readings for s in samples], label="in the lake")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(figures[-1])
    return figures


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--days", type=float, default=5.0, help="simulated days")
    parser.add_argument("--minutes", type=float, default=20.0, help="real minutes of load")
    parser.add_argument("--interval-min", type=float, default=15.0, help="each device reports this often")
    parser.add_argument("--metrics", type=int, default=2, choices=range(1, len(METRICS) + 1))
    parser.add_argument("--landing-bound-mb", type=int, default=256)
    parser.add_argument(
        "--no-maintenance", action="store_true", help="without lake maintenance and landing collection"
    )
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument(
        "--replay-window-s",
        type=float,
        default=60.0,
        help="landing.replay_window_h of the site, in seconds: landing files stay this long",
    )
    parser.add_argument(
        "--drain-s", type=float, default=300.0, help="wait this long for the lake to catch up"
    )
    parser.add_argument("--workdir", type=Path, default=Path("var/soak"))
    parser.add_argument("--report", type=Path, default=Path("var/soak-report"))
    return parser.parse_args(argv)


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    manifest: Manifest = field(default_factory=Manifest)
    load_s: float = 0.0
    lake: tuple[int, int, float] = (0, 0, 0.0)
    # Every landing file name any sample saw, and those left at the end.
    landing_seen: set[str] = field(default_factory=set)
    landing_left: set[str] = field(default_factory=set)


def _progress(last: Sample) -> None:
    print(
        f"soak: {last.t / 60:5.1f} min, simulated day {last.sim_day:5.2f}: "
        f"{last.acked_readings:,} acked, {last.lake_readings:,} in the lake, landing "
        f"{last.landing_bytes / 2**20:.1f} MiB in {last.landing_files} files, "
        f"lake {last.lake_bytes / 2**20:.1f} MiB, checkpoints {last.checkpoint_bytes / 2**20:.1f} MiB",
        flush=True,
    )


def _drain(args: argparse.Namespace, outcome: Outcome, take: Callable[[], Sample]) -> None:
    """Samples until the lake holds every acknowledged reading, then a few
    more: maintenance and landing collection go on after the load."""
    deadline = time.monotonic() + args.drain_s
    while time.monotonic() < deadline:
        outcome.samples.append(take())
        if outcome.samples[-1].lake_readings >= outcome.manifest.readings:
            break
        time.sleep(args.sample_s)
    for _ in range(3):
        time.sleep(args.sample_s)
        outcome.samples.append(take())


def run_soak(args: argparse.Namespace, plan: Plan, landing_bound: int) -> Outcome:
    """Site up, load for the planned minutes, drain, and the lake read back."""
    workdir = args.workdir.resolve()
    broker = start_mosquitto(workdir / "mosquitto")
    document = site_config(
        workdir,
        broker.url,
        plan,
        landing_bound,
        maintenance=not args.no_maintenance,
        replay_window_s=args.replay_window_s,
    )
    config_path = workdir / "city.yaml"
    with config_path.open("w") as out:
        YAML().dump(document, out)
    data_dir = workdir / "data"
    site = ManagedProcess(
        "citylake-run",
        [*CITYLAKE, "run", "--config", str(config_path)],
        workdir / "citylake-run.log",
    ).start()
    health_url = f"http://127.0.0.1:{document['run']['health_port']}/healthz"
    outcome = Outcome()
    fleet: Fleet | None = None
    try:
        with httpx.Client(timeout=3) as client:

            def healthy() -> bool:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    return bool(client.get(health_url).json()["healthy"])
                return False

            site.wait_until(healthy, 240, "a healthy site")
            print("soak: site healthy; load starts", flush=True)
            fleet = Fleet(broker.url, plan)
            publisher = threading.Thread(target=fleet.run, name="fleet", daemon=True)
            started = time.monotonic()
            publisher.start()
            next_report = started
            while publisher.is_alive():
                outcome.samples.append(sample(started, data_dir, fleet, health_url, client))
                outcome.landing_seen |= landing_names(DataLayout(data_dir).landing_root)
                if time.monotonic() >= next_report:
                    _progress(outcome.samples[-1])
                    next_report += 60
                if not site.alive():
                    outcome.failures.append(f"citylake run exited; log {site.log_path}")
                    break
                publisher.join(args.sample_s)
            outcome.load_s = time.monotonic() - started
            outcome.manifest = fleet.manifest
            print(f"soak: load done in {outcome.load_s / 60:.1f} min; waiting for the lake", flush=True)
            _drain(args, outcome, lambda: sample(started, data_dir, fleet, health_url, client))
            # Past the replay window and one more collection, the landing zone
            # should hold (almost) nothing the lake has.
            if not args.no_maintenance:
                time.sleep(args.replay_window_s + collect_every_s(args.replay_window_s) + 5)
            outcome.samples.append(sample(started, data_dir, fleet, health_url, client))
            outcome.lake = lake_readings(data_dir)
            outcome.landing_left = landing_names(DataLayout(data_dir).landing_root)
    finally:
        if fleet is not None:
            fleet.stop.set()
            fleet.close()
        site.stop(timeout_s=60)
        broker.process.stop()
    return outcome


def write_report(
    args: argparse.Namespace, plan: Plan, landing_bound: int, outcome: Outcome
) -> dict[str, Any]:
    samples, manifest = outcome.samples, outcome.manifest
    count, distinct, total = outcome.lake
    max_landing = max((s.landing_bytes for s in samples), default=0)
    checks = {
        "every acknowledged reading in the lake": count == manifest.readings,
        "no reading twice": distinct == count,
        "value sum equals the manifest's": math.isclose(
            total, manifest.value_sum, rel_tol=1e-9, abs_tol=1e-6
        ),
        "landing under its bound throughout": max_landing < landing_bound,
        "landing collected (most files seen during the load are gone at the end)": args.no_maintenance
        or len(outcome.landing_seen - outcome.landing_left) >= 0.5 * len(outcome.landing_seen),
    }
    outcome.failures += [name for name, ok in checks.items() if not ok]
    units = sorted({u for s in samples for u in s.rss_mb})
    summary = {
        "plan": asdict(plan)
        | {"readings": plan.readings, "rate_per_s": round(plan.rate), "speed": plan.speed},
        "load_minutes": round(outcome.load_s / 60, 2),
        "acked": asdict(manifest),
        "lake": {"count": count, "distinct": distinct, "value_sum": total},
        "max_landing_mb": round(max_landing / 2**20, 1),
        "landing_files_seen": len(outcome.landing_seen),
        "landing_files_collected": len(outcome.landing_seen - outcome.landing_left),
        "landing_bound_mb": args.landing_bound_mb,
        "final_lake_mb": round(samples[-1].lake_bytes / 2**20, 1) if samples else 0,
        "max_checkpoint_mb": round(max((s.checkpoint_bytes for s in samples), default=0) / 2**20, 1),
        "peak_rss_mb": {u: max(s.rss_mb.get(u, 0.0) for s in samples) for u in units},
        "checks": checks,
        "failures": outcome.failures,
    }
    (args.report / "summary.json").write_text(json.dumps(summary, indent=1))
    with (args.report / "samples.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        columns = [f for f in Sample.__dataclass_fields__ if f != "rss_mb"]
        writer.writerow([*columns, *[f"rss_mb:{u}" for u in units]])
        for s in samples:
            row = asdict(s)
            rss = row.pop("rss_mb")
            writer.writerow([*row.values(), *[rss.get(u, "") for u in units]])
    figures = plot(samples, args.report, landing_bound) if samples else []
    print(json.dumps(summary, indent=1))
    print(f"soak: report in {args.report} ({', '.join(p.name for p in figures)})")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = Plan(args.devices, args.days, args.minutes, args.interval_min, args.metrics)
    landing_bound = args.landing_bound_mb * 2**20
    print(
        f"soak: {plan.devices} devices x {plan.metrics} metrics every {plan.interval_min:g} min for "
        f"{plan.days:g} days = {plan.readings:,} readings in {plan.minutes:g} min "
        f"({plan.rate:,.0f} readings/s, {plan.speed:,.0f}x real time); "
        f"landing bound {args.landing_bound_mb} MiB",
        flush=True,
    )
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.report.mkdir(parents=True, exist_ok=True)
    outcome = run_soak(args, plan, landing_bound)
    write_report(args, plan, landing_bound, outcome)
    if outcome.failures:
        print("soak: FAILED: " + "; ".join(outcome.failures), file=sys.stderr)
        return 1
    print("soak: every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
