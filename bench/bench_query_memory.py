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
- ``both``: queries and files, no live feed;
- ``feed``: the live feed only: landed readings published as ingest does
  (Arrow IPC through a second daprd, ``--feed-every-s``) into the hot tier;
- ``all``: queries, files and the feed together, as at an edge.

``--phases`` picks and orders them (``rest`` first: every slope is compared
with it). Each phase prints RSS at its start and end and the least-squares
slope in MB/min for the query process and for daprd, daprd's Go heap in use
(``go_memstats_heap_inuse_bytes`` from its metrics port: RSS growing while the
heap stays flat is the collector's slack, not state), the hot tier's bytes
(``citylake_hot_bytes``), and request latencies (p50/p99 from the shared
``quantile``) for the phases with queries. ``--env NAME=VALUE`` is passed to
the query process (e.g. ``MALLOC_ARENA_MAX=2``), ``--daprd-env`` to the query's
daprd (e.g. ``GOMEMLIMIT=130MiB``, what the deploy's ``dapr.io/env`` sets), to
compare runs.

    .venv/bin/python bench/bench_query_memory.py [--devices 10000] [--phase-s 240] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from citylake.ingest.live import ARROW_STREAM, encode
from citylake.lake.manifest import FLINK_PART_PREFIX
from citylake.schemas import DataLayout, table
from citylake_devstack import ManagedProcess, free_port, start_daprd, start_mosquitto
from citylake_devstack.process import CITYLAKE
from citylake_devstack.scale.load import QueryLoad
from citylake_devstack.scalereport.summary import quantile
from citylake_devstack.simulators.mqtt import device_topic

METRICS = ("temperature", "humidity", "battery")
PHASES = ("rest", "queries", "files", "both", "feed", "all")
DEFAULT_PHASES = "rest,queries,files,feed,all"
# Self-hosted daprd resolves app ids by mDNS machine-wide: ids of their own, so
# neither a test suite's "query" nor another run of this bench answers for it.
APP_ID = f"query-memory-bench-{os.getpid()}"
FEEDER_ID = f"ingest-memory-bench-{os.getpid()}"


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


def readings_columns(devices: int, rows: int, now: datetime, rng: random.Random) -> dict[str, pa.Array]:
    """``rows`` readings of random devices in the two seconds before ``now``."""
    ids = [device_topic(rng.randrange(devices))[0] for _ in range(rows)]
    ms = int(now.timestamp() * 1000)
    return {
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
    }


def readings_file(layout: DataLayout, devices: int, rows: int, now: datetime, rng: random.Random) -> None:
    write_part(layout, "readings", readings_columns(devices, rows, now, rng), now.date().isoformat())


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


class _Switched:
    """A daemon thread doing its work every ``every_s`` while ``on`` is set
    (each phase sets or clears it)."""

    every_s: float

    def _begin(self, name: str) -> None:
        self.on = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _ticks(self) -> Iterator[None]:
        while not self._stop.wait(self.every_s):
            if self.on.is_set():
                yield

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class LakeGrowth(_Switched):
    """A readings file every ``every_s`` and a minute's rollups every minute while on."""

    layout: DataLayout
    devices: int
    readings_per_s: float
    every_s: float
    files: int = 0

    def __post_init__(self) -> None:
        self._begin("lake-growth")

    def _run(self) -> None:
        rng = random.Random(3)
        last_minute: datetime | None = None
        for _ in self._ticks():
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


@dataclass
class LiveFeed(_Switched):
    """Landed readings published as ingest's ``LivePublisher`` does, while on:
    one Arrow IPC stream every ``every_s`` through the feeder's daprd."""

    publish_url: str
    devices: int
    readings_per_s: float
    every_s: float
    batches: int = 0
    failed: int = 0

    def __post_init__(self) -> None:
        self._begin("live-feed")

    def _run(self) -> None:
        rng = random.Random(7)
        schema = table("readings").schema
        rows = max(1, int(self.readings_per_s * self.every_s))
        with httpx.Client(headers={"content-type": ARROW_STREAM}, timeout=5.0) as client:
            for _ in self._ticks():
                columns = readings_columns(self.devices, rows, datetime.now(UTC), rng)
                batch = pa.table(columns).cast(schema).to_batches()[0]
                try:
                    ok = client.post(self.publish_url, content=encode(batch)).status_code < 300
                except httpx.HTTPError:
                    ok = False
                self.batches += ok
                self.failed += not ok


@dataclass
class Probes:
    """What each sample reads besides RSS: daprd's Go heap and the hot tier's
    bytes, from their own metrics endpoints (NaN when a scrape fails)."""

    daprd_metrics: str
    query_metrics: str
    daprd_heap_profile: str | None = None
    profile_dir: Path | None = None

    def save_profile(self, phase: str) -> None:
        """The heap profile as ``go tool pprof -top`` reads it, one file a phase."""
        if self.daprd_heap_profile is None or self.profile_dir is None:
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        try:
            body = httpx.get(self.daprd_heap_profile, timeout=30).content
        except httpx.HTTPError as exc:
            say(f"daprd heap profile after {phase}: {exc}")
            return
        (self.profile_dir / f"daprd-heap-{phase}.pb.gz").write_bytes(body)

    def read(self) -> dict[str, float]:
        return {
            "daprd_heap": _gauge(self.daprd_metrics, "go_memstats_heap_inuse_bytes") / 2**20,
            "hot": _gauge(self.query_metrics, "citylake_hot_bytes") / 2**20,
        }


def _gauge(url: str, name: str) -> float:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


@dataclass
class Phase:
    name: str
    t: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=lambda: {"query": [], "daprd": []})
    probes: dict[str, list[float]] = field(default_factory=lambda: {"daprd_heap": [], "hot": []})
    latencies_ms: list[float] = field(default_factory=list)
    failed: dict[int, int] = field(default_factory=dict)  # status -> count; 0 = no answer

    def slope_mb_per_min(self, who: str) -> float:
        """Least-squares slope of RSS over the phase."""
        return slope_per_min(self.t, self.rss[who])


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope per minute, samples whose scrape failed (NaN) left out."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
    if len(pairs) < 2:
        return 0.0
    mx, my = sum(x for x, _ in pairs) / len(pairs), sum(y for _, y in pairs) / len(pairs)
    den = sum((x - mx) ** 2 for x, _ in pairs)
    return 60 * sum((x - mx) * (y - my) for x, y in pairs) / den if den else 0.0


def sample(phase: Phase, started: float, procs: dict[str, psutil.Process], probes: Probes) -> None:
    phase.t.append(time.monotonic() - started)
    for who, proc in procs.items():
        phase.rss[who].append(proc.memory_info().rss / 2**20)
    for name, value in probes.read().items():
        phase.probes[name].append(value)


def seed_lake(layout: DataLayout, devices: int, minutes: int) -> None:
    """Before the service starts: ``minutes`` of rollups and a readings file per minute."""
    rng = random.Random(1)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    for m in range(minutes, 0, -1):
        moment = now - timedelta(minutes=m)
        rollups_file(layout, devices, moment)
        readings_file(layout, devices, devices, moment, rng)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--phase-s", type=float, default=240.0)
    parser.add_argument("--rest-s", type=float, help="the rest phase's length (default: --phase-s)")
    parser.add_argument("--rate", type=float, default=50.0, help="queries/s through daprd, open loop")
    parser.add_argument("--readings-per-s", type=float, default=450.0, help="the edge box's 444/s")
    parser.add_argument("--file-every-s", type=float, default=2.0, help="the box's checkpoint interval")
    parser.add_argument("--feed-every-s", type=float, default=1.0, help="a live batch this often")
    parser.add_argument("--seed-minutes", type=int, default=30)
    parser.add_argument("--phases", default=DEFAULT_PHASES, help=f"comma-separated, of {', '.join(PHASES)}")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="for the query process"
    )
    parser.add_argument(
        "--daprd-env", action="append", default=[], metavar="NAME=VALUE", help="for the query's daprd"
    )
    parser.add_argument(
        "--config", default="{}", help="JSON merged into services.query (e.g. the edge overlay's)"
    )
    parser.add_argument(
        "--daprd-profile",
        type=Path,
        help="write the query daprd's Go heap profile (pprof, in use) at the end of each phase here",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    args.phase_names = [name.strip() for name in args.phases.split(",") if name.strip()]
    unknown = sorted(set(args.phase_names) - set(PHASES))
    if unknown or not args.phase_names or args.phase_names[0] != "rest":
        parser.error(f"--phases: {', '.join(unknown) or args.phases!r}: of {', '.join(PHASES)}, rest first")
    return args


def main() -> None:
    args = parse_args()
    # A SIGTERM unwinds the ExitStack like Ctrl-C does, so the service, its
    # daprd and mosquitto are stopped, not orphaned with the bench's app ids.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    env = dict(item.split("=", 1) for item in args.env)
    daprd_env = dict(item.split("=", 1) for item in args.daprd_env)

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-query-memory-")))
        data_dir = workdir / "data"
        layout = DataLayout(data_dir)
        say(f"seeding the lake: {args.devices} devices, {args.seed_minutes} min of readings and rollups ...")
        seed_lake(layout, args.devices, args.seed_minutes)
        mosquitto = start_mosquitto(workdir / "mosquitto")
        stack.callback(mosquitto.process.stop)
        port = free_port()
        profile_port = free_port()
        profiling = ["--enable-profiling", "--profile-port", str(profile_port)] if args.daprd_profile else []
        sidecar = start_daprd(
            APP_ID, port, workdir / "dapr-query", mosquitto.url, env=daprd_env, args=profiling
        )
        stack.callback(sidecar.process.stop)
        # The feed's own sidecar, as ingest has: the query's daprd only receives.
        feeder = start_daprd(FEEDER_ID, free_port(), workdir / "dapr-feeder", mosquitto.url)
        stack.callback(feeder.process.stop)
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
        live = LiveFeed(
            f"{feeder.http_url}/v1.0/publish/citylake-pubsub/readings?metadata.rawPayload=true",
            args.devices,
            args.readings_per_s,
            args.feed_every_s,
        )
        live.start()
        stack.callback(live.stop)
        probes = Probes(
            f"http://127.0.0.1:{sidecar.metrics_port}/metrics",
            f"http://127.0.0.1:{port}/metrics",
            f"http://127.0.0.1:{profile_port}/debug/pprof/heap" if args.daprd_profile else None,
            args.daprd_profile,
        )
        started = time.monotonic()
        phases = [
            run_phase(name, args, growth, live, sidecar.http_url, procs, probes, started)
            for name in args.phase_names
        ]
    report(phases, args, env, daprd_env, growth.files, live)
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
    live: LiveFeed,
    sidecar_url: str,
    procs: dict[str, psutil.Process],
    probes: Probes,
    started: float,
) -> Phase:
    phase = Phase(name)
    seconds = args.rest_s if name == "rest" and args.rest_s else args.phase_s
    say(f"phase {name}: {seconds:g} s ...")
    for switch, phases in ((growth.on, ("files", "both", "all")), (live.on, ("feed", "all"))):
        if name in phases:
            switch.set()
        else:
            switch.clear()
    load: QueryLoad | None = None
    if name in ("queries", "both", "all"):
        clock: Callable[[], float] = lambda: time.monotonic() - started  # noqa: E731
        load = QueryLoad(f"{sidecar_url}/v1.0/invoke/{APP_ID}/method", args.rate, clock, lambda: args.devices)
        load.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sample(phase, started, procs, probes)
        time.sleep(5.0)
    sample(phase, started, procs, probes)
    probes.save_profile(name)
    if load is not None:
        load.stop()
        phase.latencies_ms = [q.latency_ms for q in load.queries if q.status == 200]
        phase.failed = dict(Counter(q.status for q in load.queries if q.status != 200))
    return phase


def report(
    phases: list[Phase],
    args: argparse.Namespace,
    env: dict[str, str],
    daprd_env: dict[str, str],
    files: int,
    live: LiveFeed,
) -> None:
    print(
        f"query service memory: {args.devices} devices, {args.phase_s:g} s a phase, {args.rate:g} queries/s "
        f"through daprd, a readings file every {args.file_every_s:g} s ({files} files written in all), "
        f"a live batch every {args.feed_every_s:g} s ({live.batches} published, {live.failed} failed); "
        f"query env {env or '{}'}, daprd env {daprd_env or '{}'}, config {args.config}"
    )
    rest = {who: phases[0].slope_mb_per_min(who) for who in ("query", "daprd")}
    print(
        "| phase | query RSS start → end (peak) MB | query MB/min (rest) | hot tier MB end "
        "| daprd RSS start → end (peak) MB | daprd MB/min (rest) | daprd Go heap start → end MB "
        "| p50 / p99 ms | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for p in phases:
        cells = []
        for who in ("query", "daprd"):
            rss = p.rss[who]
            cells.append(f"{rss[0]:.0f} → {rss[-1]:.0f} ({max(rss):.0f})")
            cells.append(f"{p.slope_mb_per_min(who):+.1f} ({rest[who]:+.1f})")
            if who == "query":
                cells.append(f"{p.probes['hot'][-1]:.1f}")
        heap = p.probes["daprd_heap"]
        cells.append(f"{heap[0]:.0f} → {heap[-1]:.0f}")
        lat = "—"
        if p.latencies_ms:
            lat = f"{quantile(p.latencies_ms, 0.5):.1f} / {quantile(p.latencies_ms, 0.99):.1f}"
        print(f"| {p.name} | {' | '.join(cells)} | {lat} | {sum(p.failed.values())} {p.failed or ''} |")


if __name__ == "__main__":
    main()
