"""Where the query service's memory goes over time: RSS of ``citylake serve
query`` and of its daprd, sampled while the lake grows and queries arrive,
phase by phase, so a growth can be pinned on its cause.

The edge box (README, "The edge in a box") saw the query process grow
steadily, 222 -> 778 MB in 20 minutes, with DuckDB capped at 128 + 96 MiB,
and daprd-query 93 -> 285 MB. This bench runs the same service and sidecar
alone, with no Flink and no ingest, on a lake of ``--devices`` devices that
gets part files as Flink's sink commits them (a readings file every
``--file-every-s``, a minute-rollups file every minute), and the edge's
query mix (latest, last 5 min, 30 min of minute rollups) open loop through
daprd at ``--rate``. Phases of ``--phase-s`` each, in order:

- ``rest``: nothing happens (the baseline every slope is compared with);
- ``queries``: queries only, the lake still;
- ``files``: files only, no queries;
- ``both``: the two together, as at an edge.

Each phase prints RSS at its start and end and the least-squares slope in
MB/min for the query process and for daprd; request latencies (p50/p99 from
the shared ``quantile``) for the phases with queries. ``--env NAME=VALUE``
is passed to the query process (e.g. ``MALLOC_ARENA_MAX=2``) to compare runs.

    .venv/bin/python bench/bench_query_memory.py [--devices 10000] [--phase-s 240] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from citylake.lake.manifest import FLINK_PART_PREFIX
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess, free_port, start_daprd, start_mosquitto
from citylake_devstack.process import CITYLAKE
from citylake_devstack.scale.load import QueryLoad
from citylake_devstack.scalereport.summary import quantile
from citylake_devstack.simulators.mqtt import device_topic

METRICS = ("temperature", "humidity", "battery")
PHASES = ("rest", "queries", "files", "both")
APP_ID = "query-memory-bench"


def say(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def write_part(layout: DataLayout, name: str, columns: dict[str, pa.Array], day: str) -> None:
    """One file as Flink's file sink commits it: written hidden, then renamed."""
    spec = table(name)
    rows = pa.table(columns).cast(spec.schema)
    path = layout.lake(spec) / f"date={day}" / f"{FLINK_PART_PREFIX}{uuid4()}-0-0"
    path.parent.mkdir(parents=True, exist_ok=True)
    hidden = path.with_name(f".{path.name}.inprogress")
    pq.write_table(rows, hidden, compression="zstd")
    hidden.rename(path)


def readings_file(layout: DataLayout, devices: int, rows: int, now: datetime, rng: random.Random) -> None:
    ids = [device_topic(rng.randrange(devices))[0] for _ in range(rows)]
    ms = int(now.timestamp() * 1000)
    write_part(
        layout,
        "readings",
        {
            "device_id": pa.array(ids),
            "ts": pa.array([ms - rng.randrange(2000) for _ in ids], pa.timestamp("ms", "UTC")),
            "metric": pa.array([METRICS[rng.randrange(len(METRICS))] for _ in ids]),
            "value": pa.array([rng.random() * 40 for _ in ids]),
            "text": pa.nulls(rows, pa.string()),
            "unit": pa.array(["u"] * rows),
            "quality": pa.array([0] * rows, pa.uint8()),
            "source": pa.array(["mqtt-sensors"] * rows),
            "site": pa.array(["bench"] * rows),
            "ingest_ts": pa.array([ms] * rows, pa.timestamp("ms", "UTC")),
        },
        now.date().isoformat(),
    )


def rollups_file(layout: DataLayout, devices: int, window: datetime) -> None:
    """One minute of every device's metrics, as the rollups job writes it."""
    ids = [device_topic(i)[0] for i in range(devices) for _ in METRICS]
    n = len(ids)
    write_part(
        layout,
        "readings_1m",
        {
            "device_id": pa.array(ids),
            "metric": pa.array(list(METRICS) * devices),
            "window_start": pa.array([int(window.timestamp() * 1000)] * n, pa.timestamp("ms", "UTC")),
            "count": pa.array([4] * n, pa.int64()),
            "min": pa.array([1.0] * n),
            "max": pa.array([3.0] * n),
            "avg": pa.array([2.0] * n),
            "last": pa.array([2.5] * n),
            "site": pa.array(["bench"] * n),
        },
        window.date().isoformat(),
    )


@dataclass
class LakeGrowth:
    """A readings file every ``every_s`` and a minute's rollups every minute while on."""

    layout: DataLayout
    devices: int
    readings_per_s: float
    every_s: float
    on: threading.Event = field(default_factory=threading.Event)
    files: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lake-growth", daemon=True)

    def _run(self) -> None:
        rng = random.Random(3)
        last_minute: datetime | None = None
        while not self._stop.wait(self.every_s):
            if not self.on.is_set():
                continue
            now = datetime.now(UTC)
            readings_file(
                self.layout, self.devices, max(1, int(self.readings_per_s * self.every_s)), now, rng
            )
            self.files += 1
            minute = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
            if minute != last_minute:
                rollups_file(self.layout, self.devices, minute)
                self.files += 1
                last_minute = minute

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class Phase:
    name: str
    t: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=lambda: {"query": [], "daprd": []})
    latencies_ms: list[float] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)  # status -> count; 0 = no answer

    def slope_mb_per_min(self, who: str) -> float:
        """Least-squares slope of RSS over the phase."""
        xs, ys = self.t, self.rss[who]
        if len(xs) < 2:
            return 0.0
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        den = sum((x - mx) ** 2 for x in xs)
        return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def sample(phase: Phase, started: float, procs: dict[str, psutil.Process]) -> None:
    phase.t.append(time.monotonic() - started)
    for who, proc in procs.items():
        phase.rss[who].append(proc.memory_info().rss / 2**20)


def seed_lake(layout: DataLayout, devices: int, minutes: int) -> None:
    """Before the service starts: ``minutes`` of rollups and a readings file per minute."""
    rng = random.Random(1)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for m in range(minutes, 0, -1):
        moment = now - timedelta(minutes=m)
        rollups_file(layout, devices, moment)
        readings_file(layout, devices, devices, moment, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--phase-s", type=float, default=240.0)
    parser.add_argument("--rate", type=float, default=50.0, help="queries/s through daprd, open loop")
    parser.add_argument("--readings-per-s", type=float, default=450.0, help="the edge box's 444/s")
    parser.add_argument("--file-every-s", type=float, default=2.0, help="the box's checkpoint interval")
    parser.add_argument("--seed-minutes", type=int, default=30)
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="for the query process"
    )
    parser.add_argument(
        "--config", default="{}", help="JSON merged into services.query (e.g. the edge overlay's)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-query-memory-")))
        data_dir = workdir / "data"
        layout = DataLayout(data_dir)
        say(f"seeding the lake: {args.devices} devices, {args.seed_minutes} min of readings and rollups ...")
        seed_lake(layout, args.devices, args.seed_minutes)
        mosquitto = start_mosquitto(workdir / "mosquitto")
        stack.callback(mosquitto.process.stop)
        port = free_port()
        # Its own app id: self-hosted daprd resolves ids by mDNS machine-wide,
        # and a test suite's "query" may be running beside the bench.
        sidecar = start_daprd(APP_ID, port, workdir / "dapr-query", mosquitto.url)
        stack.callback(sidecar.process.stop)
        query = {"port": port, "live_pubsub": "citylake-pubsub", **json.loads(args.config)}
        config = workdir / "city.yaml"  # JSON is YAML
        config.write_text(
            json.dumps({"site": "bench", "data_dir": str(data_dir), "services": {"query": query}})
        )
        argv = [*CITYLAKE, "serve", "query", "--config", str(config), "--port", str(port)]
        service = ManagedProcess(
            "citylake-query", argv, workdir / "query.log", {"DAPR_HTTP_PORT": str(sidecar.http_port), **env}
        )
        stack.callback(service.start().stop)
        service.wait_until(lambda: _ok(f"http://127.0.0.1:{port}/healthz"), 600, "/healthz 200")
        assert service.proc is not None and sidecar.process.proc is not None
        procs = {"query": psutil.Process(service.proc.pid), "daprd": psutil.Process(sidecar.process.proc.pid)}
        growth = LakeGrowth(layout, args.devices, args.readings_per_s, args.file_every_s)
        growth.start()
        stack.callback(growth.stop)
        started = time.monotonic()
        phases = [run_phase(name, args, growth, sidecar.http_url, procs, started) for name in PHASES]
    report(phases, args, env, growth.files)
    if args.json:
        args.json.write_text(json.dumps([p.__dict__ for p in phases]))


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def run_phase(
    name: str,
    args: argparse.Namespace,
    growth: LakeGrowth,
    sidecar_url: str,
    procs: dict[str, psutil.Process],
    started: float,
) -> Phase:
    phase = Phase(name)
    say(f"phase {name}: {args.phase_s:g} s ...")
    if name in ("files", "both"):
        growth.on.set()
    else:
        growth.on.clear()
    load: QueryLoad | None = None
    if name in ("queries", "both"):
        clock: Callable[[], float] = lambda: time.monotonic() - started  # noqa: E731
        load = QueryLoad(f"{sidecar_url}/v1.0/invoke/{APP_ID}/method", args.rate, clock, lambda: args.devices)
        load.start()
    end = time.monotonic() + args.phase_s
    while time.monotonic() < end:
        sample(phase, started, procs)
        time.sleep(5.0)
    sample(phase, started, procs)
    if load is not None:
        load.stop()
        phase.latencies_ms = [q.latency_ms for q in load.queries if q.status == 200]
        phase.failed = dict(Counter(q.status for q in load.queries if q.status != 200))
    return phase


def report(phases: list[Phase], args: argparse.Namespace, env: dict[str, str], files: int) -> None:
    print(
        f"query service memory: {args.devices} devices, {args.phase_s:g} s a phase, {args.rate:g} queries/s "
        f"through daprd, a readings file every {args.file_every_s:g} s ({files} files written in all); "
        f"query env {env or '{}'}, config {args.config}"
    )
    rest = {who: phases[0].slope_mb_per_min(who) for who in ("query", "daprd")}
    print(
        "| phase | query RSS start → end MB | query MB/min (rest) "
        "| daprd RSS start → end MB | daprd MB/min (rest) | p50 / p99 ms | failed |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in phases:
        cells = []
        for who in ("query", "daprd"):
            rss = p.rss[who]
            cells.append(f"{rss[0]:.0f} → {rss[-1]:.0f}")
            cells.append(f"{p.slope_mb_per_min(who):+.1f} ({rest[who]:+.1f})")
        lat = "—"
        if p.latencies_ms:
            lat = f"{quantile(p.latencies_ms, 0.5):.1f} / {quantile(p.latencies_ms, 0.99):.1f}"
        print(f"| {p.name} | {' | '.join(cells)} | {lat} | {sum(p.failed.values())} {p.failed or ''} |")


if __name__ == "__main__":
    main()
