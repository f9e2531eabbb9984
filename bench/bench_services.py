"""The query service under load, against the same questions asked of DuckDB
and PostgreSQL on the same data, in the same run.

Data: devices x metrics x samples readings, one sample every 10 minutes (one
day at the defaults: 100k x 10 x 144 = 144M readings), generated
deterministically and written as the lake holds them after compaction (per
date partition, zstd files of consecutive hours, at most 24M readings each,
sorted by device, metric and time by the lake's own compaction writer: six
4-hour files at the defaults), plus their hourly rollups (``readings_1h``),
computed by DuckDB rather than the Flink ``rollups`` job, for time.

Questions, each over deterministic random inputs (the same for every system):
  latest     the latest value of each metric of one device
  range      one device's readings over one hour
  week_ago   one device's readings over the day a week before the data's last
             day (from the lake: older than any hot window); needs --days 8
  citywide   the average of one metric over every device for one hour
             (the service answers it from readings_1h: GET /v1/metrics/{m}/aggregate)
  district   the latest value of one metric on every device of one district
             (GET /v1/metrics/{m}/latest?district=<civil code>; DISTRICTS districts,
             devices spread evenly, as a lake `devices` table with civil codes)
  sql_month  analyst SQL: one device's month of one metric through POST /v1/sql
             (one query at a time, not open loop: an analyst waits for each answer)

The service keeps its serving store (services/query/store.py); nothing is
timed until a range answers from it (X-Served-From: store), and the time that
took is reported.

HTTP, open loop at a fixed rate (bench/loadgen.py), latency from each
request's due time: the query service direct (``citylake serve query``, hot
tier on: live_pubsub set, its daprd subscribed through mosquitto) and through
daprd service invocation; the HTTP floor (bench/http_floor.py: a FastAPI route
answering a constant under the same uvicorn settings) direct and through its
own daprd. Baselines, in this process, one query at a time: DuckDB on a native
table, DuckDB read_parquet on the lake files, PostgreSQL 15 (PRIMARY KEY
(device_id, metric, ts), loaded with COPY).

    .venv/bin/python bench/bench_services.py [--devices 100000 --metrics 10 --samples 144]
        [--days 8] [--rate 500 --seconds 10 --lake-rate 50 --citywide-rate 2 --citywide-seconds 30]
        [--workdir DIR --keep]

Generated data, the native DuckDB file and the PostgreSQL cluster stay in
--workdir with --keep, and a rerun with the same sizes skips making them.
PostgreSQL needs the psycopg driver and tools/setup/bench.sh (postgresql-15).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psutil
from bench_lake import METRICS, T0, generate_sql
from loadgen import LoadResult, open_loop
from pg_cluster import PgCluster, PostgresUnavailable, require_binaries

from citylake.lake import Lake
from citylake.lake.catalog import raw_select
from citylake.lake.compaction import write_sorted
from citylake.schemas import DataLayout, table
from citylake_devstack import ComponentUnavailable, ManagedProcess, free_port, start_daprd, start_mosquitto
from citylake_devstack.components import daprd_binary
from citylake_devstack.process import CITYLAKE
from citylake_devstack.scalereport.summary import quantile  # the one percentile of every figure

BENCH = Path(__file__).resolve().parent
START = datetime.fromisoformat(T0).replace(tzinfo=UTC)
QUESTIONS = {
    "latest": "latest value of one device",
    "range": "one device, 1 h of readings",
    "week_ago": "one device, a day a week ago",
    "citywide": "city-wide 1 h average",
    "district": "district latest, one metric",
    "sql_month": "analyst SQL, one device's month",
}
# Asked one at a time over POST, not by the open-loop GET generator.
SEQUENTIAL = {"sql_month"}
DISTRICTS = 100
# Questions that need this many days of data (--days); without them a run says so and skips them.
NEEDS_DAYS = {"week_ago": 8}
PHASES = ["generate", "rollups", "native", "pg_load", "pg_index", "devices"]
HTTP_TARGETS = ["direct", "daprd", "floor", "floor_daprd"]
BASELINES = ["native", "parquet", "postgres"]
HEADINGS = {
    "direct": "citylake direct",
    "daprd": "via daprd",
    "floor": "HTTP floor",
    "floor_daprd": "floor via daprd",
    "native": "DuckDB native",
    "parquet": "DuckDB read_parquet",
    "postgres": "PostgreSQL 15",
}


@dataclass(frozen=True)
class Size:
    devices: int
    metrics: int
    samples: int
    step_minutes: int = 10

    @property
    def readings(self) -> int:
        return self.devices * self.metrics * self.samples

    @property
    def hours(self) -> int:
        return max(1, self.samples * self.step_minutes // 60)

    @property
    def days(self) -> int:
        return self.hours // 24

    def questions(self) -> list[str]:
        return [q for q in QUESTIONS if self.days >= NEEDS_DAYS.get(q, 0)]


def device(number: int) -> str:
    return f"dev-{number:06d}"


def civil_code(district: int) -> str:
    return f"320101{district:02d}"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def say(message: str) -> None:
    print(message, flush=True)


# -- inputs -----------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One question's input: a device or a metric, and an hour."""

    device: str
    metric: str
    start: datetime
    span: timedelta = timedelta(hours=1)

    @property
    def end(self) -> datetime:
        return self.start + self.span

    def path(self, question: str) -> str:
        window = f"from={iso(self.start)}&to={iso(self.end)}"
        if question == "district":
            return f"/v1/metrics/{self.metric}/latest?district={self.device}&limit=1000"
        if question == "latest":
            return f"/v1/devices/{self.device}/latest"
        if question in ("range", "week_ago"):
            # A day of one device (1,440 readings at 10 metrics) is one page, as the baselines answer it.
            return f"/v1/devices/{self.device}/readings?{window}&limit=10000"
        return f"/v1/metrics/{self.metric}/aggregate?{window}"


def asks(size: Size, question: str, count: int, seed: int) -> list[Ask]:
    rng = random.Random(seed)
    if question == "district":  # the ask's "device" is the district's civil code
        return [
            Ask(civil_code(rng.randrange(DISTRICTS)), METRICS[rng.randrange(size.metrics)], START)
            for _ in range(count)
        ]
    if question == "sql_month":
        return [
            Ask(
                device(rng.randrange(size.devices)),
                METRICS[rng.randrange(size.metrics)],
                START,
                timedelta(days=31),
            )
            for _ in range(count)
        ]
    if question == "week_ago":
        # The whole day a week before the data's last day: older than any hot window.
        day = START + timedelta(days=size.days - 8)
        return [Ask(device(rng.randrange(size.devices)), "", day, timedelta(days=1)) for _ in range(count)]
    return [
        Ask(
            device(rng.randrange(size.devices)),
            METRICS[rng.randrange(size.metrics)],
            START + timedelta(hours=rng.randrange(size.hours)),
        )
        for _ in range(count)
    ]


# -- data -------------------------------------------------------------------


class State:
    """What the workdir already holds (state.json), so a rerun skips it."""

    def __init__(self, workdir: Path, size: Size) -> None:
        self.path = workdir / "state.json"
        self.workdir = workdir
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        if saved.get("size") != asdict(size):
            for name in ("data", "native.duckdb", "pg", "pg-csv", ".tmp"):
                remove(workdir / name)
            saved = {"size": asdict(size), "seconds": {}}
        self.saved: dict[str, Any] = saved

    def done(self, phase: str) -> float | None:
        seconds = self.saved["seconds"].get(phase)
        return float(seconds) if seconds is not None else None

    def record(self, phase: str, seconds: float) -> None:
        self.saved["seconds"][phase] = seconds
        self.path.write_text(json.dumps(self.saved, indent=1))

    def redo_from(self, phase: str) -> None:
        """``phase`` is made again, so everything made after it is stale."""
        later = PHASES[PHASES.index(phase) :]
        self.saved["seconds"] = {k: v for k, v in self.saved["seconds"].items() if k not in later}
        self.path.write_text(json.dumps(self.saved, indent=1))


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def phase(state: State, name: str, what: str, run: Callable[[], None]) -> float:
    seconds = state.done(name)
    if seconds is not None:
        say(f"{what}: already in {state.workdir} (took {seconds:.0f} s when made)")
        return seconds
    say(f"{what} ...")
    state.redo_from(name)
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    state.record(name, seconds)
    say(f"{what}: {seconds:.0f} s")
    return seconds


# Files of at most this many readings: as many as bench_lake's daily files at
# its defaults. The lake's writer sorts each file in one DuckDB connection at
# its default memory limit, which a whole day of 144M readings would exceed on
# a shared 23 GB machine; compaction's 128 MB groups also split a day this big.
MAX_FILE_READINGS = 24_000_000


def build_readings(layout: DataLayout, workdir: Path, size: Size) -> None:
    """Generated readings (bench_lake's generator, 10-minute steps) written as
    the lake holds them after compaction: per date partition, files of
    consecutive hours, each sorted by (device, metric, ts) and zstd by the
    lake's own compaction writer."""
    remove(layout.data_dir)
    per_hour = size.devices * size.metrics * 60 / size.step_minutes
    # Whole hours that divide the day, so every file of a day spans as many.
    hours = max(h for h in (1, 2, 3, 4, 6, 8, 12, 24) if h == 1 or h * per_hour <= MAX_FILE_READINGS)
    staging = workdir / "staging"
    remove(staging)
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'; SET preserve_insertion_order = false")
    generated = generate_sql(size.devices, size.metrics, size.samples, size.step_minutes)
    conn.execute(
        f"COPY (SELECT *, CAST(ts AS DATE)::VARCHAR AS day, hour(ts) // {hours} AS slice FROM ({generated})) "
        f"TO '{staging}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day, slice))"
    )
    conn.close()
    say(f"  generated (arrival order) in {staging}; sorting into files of {hours} h")
    root = layout.lake(table("readings"))
    groups = sorted(p for p in staging.glob("day=*/slice=*") if p.is_dir())
    for i, group in enumerate(groups):
        day, part = group.parent.name.removeprefix("day="), group.name.removeprefix("slice=")
        target = root / f"date={day}" / f"part-bench-{int(part):02d}"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_sorted(table("readings"), sorted(str(f) for f in group.glob("*.parquet")), str(target))
        say(f"  lake file {i + 1}/{len(groups)} written: {target.relative_to(layout.data_dir)}")
    remove(staging)


ROLLUP_SQL = """
SELECT device_id, metric, time_bucket(INTERVAL 1 HOUR, ts) AS window_start,
       count(*) AS count, min(value) AS min, max(value) AS max, avg(value) AS avg,
       arg_max(value, ts) AS last
FROM {source}
WHERE value IS NOT NULL AND CAST(time_bucket(INTERVAL 1 HOUR, ts) AS DATE) = DATE '{day}'
GROUP BY ALL
"""


def build_rollups(layout: DataLayout, workdir: Path) -> None:
    """readings_1h of the lake's readings, as the rollups job defines them
    (count, min, max, avg of values; last = the value with the latest ts),
    computed by DuckDB and written by the lake's compaction writer."""
    remove(layout.lake(table("readings_1h")))
    lake = Lake(layout)
    source = f"({raw_select(lake.snapshot('readings'))})"
    lake.close()
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'; SET preserve_insertion_order = false")
    days = [d for (d,) in conn.execute(f"SELECT DISTINCT CAST(ts AS DATE)::VARCHAR FROM {source}").fetchall()]
    root = layout.lake(table("readings_1h"))
    for i, day in enumerate(sorted(days)):
        staging = workdir / f"staging-1h-{day}.parquet"
        select = ROLLUP_SQL.format(source=source, day=day)
        conn.execute(f"COPY ({select}) TO '{staging}' (FORMAT parquet, COMPRESSION zstd)")
        target = root / f"date={day}" / f"part-bench-{i}"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_sorted(table("readings_1h"), [str(staging)], str(target))
        staging.unlink()
        say(f"  readings_1h partition {day} written ({i + 1}/{len(days)})")
    conn.close()


def build_native(layout: DataLayout, path: Path) -> None:
    """The same rows and column types, in the lake's order, as DuckDB tables."""
    remove(path)
    lake = Lake(layout)
    conn = duckdb.connect(str(path))
    conn.execute("SET TimeZone = 'UTC'")
    for name in ("readings", "readings_1h"):
        conn.execute(f"CREATE TABLE {name} AS {raw_select(lake.snapshot(name))}")
    conn.close()
    lake.close()


def build_devices(layout: DataLayout, native: Path, size: Size) -> None:
    """A `devices` table in the lake (one file, as the devices job leaves it
    after compaction) and in the native database: device i in district i mod
    DISTRICTS."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = table("devices")
    rows = [
        {"device_id": device(i), "type": "air_quality", "civil_code": civil_code(i % DISTRICTS),
         "first_seen": START, "last_seen": START}
        for i in range(size.devices)
    ]  # fmt: skip
    target = layout.lake(spec) / "part-bench-0"
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=spec.schema), target, compression="zstd")
    lake = Lake(layout)
    conn = duckdb.connect(str(native))
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(f"CREATE OR REPLACE TABLE devices AS {raw_select(lake.snapshot('devices'))}")
    conn.close()
    lake.close()


def warm_files(paths: Sequence[Path]) -> None:
    """Read files once, so they are in the OS page cache."""
    for path in paths:
        with path.open("rb") as f:
            while f.read(8 << 20):
                pass


def lake_files(layout: DataLayout, name: str) -> list[str]:
    lake = Lake(layout)
    try:
        return [str(p) for p in lake.snapshot(name).paths]
    finally:
        lake.close()


# -- PostgreSQL -------------------------------------------------------------

PG_TABLES = """
DROP TABLE IF EXISTS readings, readings_1h;
CREATE TABLE readings (
    device_id text NOT NULL, metric text NOT NULL, ts timestamptz NOT NULL,
    value double precision, text text, unit text, quality smallint NOT NULL
);
CREATE TABLE readings_1h (
    device_id text NOT NULL, metric text NOT NULL, window_start timestamptz NOT NULL,
    count bigint NOT NULL, min double precision, max double precision, avg double precision,
    last double precision
);
"""
PG_INDEXES = [
    "ALTER TABLE readings ADD PRIMARY KEY (device_id, metric, ts)",
    # Keyed for the city-wide question (one metric, one hour, every device).
    "ALTER TABLE readings_1h ADD PRIMARY KEY (metric, window_start, device_id)",
]


def _psycopg() -> Any:
    try:
        # psycopg[binary] is a bench-only driver; the ignore covers a venv without it.
        import psycopg  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise PostgresUnavailable("the psycopg driver is not installed (psycopg[binary])") from exc
    return psycopg


def pg_load(pg: PgCluster, layout: DataLayout, workdir: Path, size: Size) -> None:
    """COPY from CSV that DuckDB writes from the lake, in the lake's order
    (device, metric, ts: the heap ends up clustered like the primary key), a
    chunk of devices at a time; DuckDB writes the next chunk while PostgreSQL
    reads this one."""
    psycopg = _psycopg()
    csv_dir = workdir / "pg-csv"
    csv_dir.mkdir(exist_ok=True)
    csv_dir.chmod(0o755)  # the server reads the files as its own user
    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    readings = f"read_parquet({lake_files(layout, 'readings')})"
    rollups = f"read_parquet({lake_files(layout, 'readings_1h')})"
    chunks = max(1, size.readings // 6_000_000)
    step = -(-size.devices // chunks)
    selects = [
        f"SELECT device_id, metric, ts, value, text, unit, quality FROM {readings} "
        f"WHERE device_id >= '{device(lo)}' AND device_id < '{device(lo + step)}' "
        "ORDER BY device_id, metric, ts"
        for lo in range(0, size.devices, step)
    ]
    selects.append(
        f"SELECT device_id, metric, window_start, count, min, max, avg, last FROM {rollups} "
        "ORDER BY metric, window_start, device_id"
    )
    targets = ["readings"] * (len(selects) - 1) + ["readings_1h"]

    def write(i: int) -> Path:
        path = csv_dir / f"chunk-{i}.csv"
        duck.cursor().execute(f"COPY ({selects[i]}) TO '{path}' (FORMAT csv, HEADER false)")
        return path

    # One transaction that also creates the tables: at wal_level minimal the
    # rows then skip the WAL (the files are synced at commit instead).
    with psycopg.connect(pg.conninfo()) as conn, ThreadPoolExecutor(1) as pool:
        conn.execute(PG_TABLES)
        pending = pool.submit(write, 0)
        for i, target in enumerate(targets):
            path = pending.result()
            if i + 1 < len(selects):
                pending = pool.submit(write, i + 1)
            conn.execute(f"COPY {target} FROM '{path}' (FORMAT csv)")
            path.unlink()
            say(f"  PostgreSQL: chunk {i + 1}/{len(selects)} copied into {target}")
        conn.commit()
    remove(csv_dir)


def pg_index(pg: PgCluster) -> None:
    psycopg = _psycopg()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for statement in PG_INDEXES:
            conn.execute(statement)
        # Statistics for the planner, and the visibility map for index-only scans.
        conn.execute("VACUUM (ANALYZE) readings")
        conn.execute("VACUUM (ANALYZE) readings_1h")
        conn.execute("CHECKPOINT")  # and WAL beyond min_wal_size leaves the disk


def pg_prewarm(pg: PgCluster) -> str:
    """Read the tables and keys once into the OS page cache (best effort: what
    does not fit in memory is read from disk when asked, a cost of its size)."""
    psycopg = _psycopg()
    with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        for relation in ("readings_pkey", "readings", "readings_1h_pkey", "readings_1h"):
            conn.execute("SELECT pg_prewarm(%s::regclass, 'read')", (relation,))
        row = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('readings')), "
            "pg_size_pretty(pg_total_relation_size('readings_1h')), version()"
        ).fetchone()
    return f"PostgreSQL: readings {row[0]}, readings_1h {row[1]} (tables + keys); {row[2].split(',')[0]}"


# -- the services -----------------------------------------------------------


@dataclass
class Services:
    bases: dict[str, str] = field(default_factory=dict)  # target -> base URL
    prefixes: dict[str, str] = field(default_factory=dict)  # target -> path prefix
    hot_rebuild_s: float = 0.0
    store_ready_s: float = 0.0

    @property
    def targets(self) -> list[str]:
        return [t for t in HTTP_TARGETS if t in self.bases]

    @property
    def services(self) -> list[str]:
        """The query service's targets (direct, and through daprd when it runs)."""
        return [t for t in ("direct", "daprd") if t in self.bases]


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for_store(service: ManagedProcess, base: str, started: float) -> float:
    """Until a range answers from the serving store; seconds from ``started``."""
    probe = base + Ask(device(0), "", START).path("range")
    service.wait_until(partial(_served_from_store, probe), 7200, "ranges served from the store")
    store_ready = time.perf_counter() - started
    say(f"serving store caught up: {store_ready:.1f} s from start")
    return store_ready


def _served_from_store(url: str) -> bool:
    try:
        return str(httpx.get(url, timeout=10).headers.get("x-served-from")) == "store"
    except httpx.HTTPError:
        return False


def start_services(stack: ExitStack, workdir: Path, data_dir: Path, memory_mb: int | None) -> Services:
    mosquitto = start_mosquitto(workdir / "mosquitto")
    stack.callback(mosquitto.process.stop)
    query_port, floor_port = free_port(), free_port()
    try:
        daprd_binary()
    except ComponentUnavailable as exc:
        # The direct figures still mean something: the hot tier is rebuilt from
        # the lake all the same, only no live feed arrives. Said in the output.
        say(f"daprd unavailable, its rows skipped: {exc}")
        with_dapr = False
    else:
        with_dapr = True
    sidecar = start_daprd("query", query_port, workdir / "dapr-query", mosquitto.url) if with_dapr else None
    if sidecar is not None:
        stack.callback(sidecar.process.stop)
    query: dict[str, object] = {"port": query_port, "live_pubsub": "citylake-pubsub"}
    if memory_mb is not None:
        query["memory_limit_mb"] = memory_mb
    config = workdir / "city.yaml"  # JSON is YAML
    config.write_text(json.dumps({"site": "bench", "data_dir": str(data_dir), "services": {"query": query}}))
    argv = [*CITYLAKE, "serve", "query", "--config", str(config), "--port", str(query_port)]
    env = {"DAPR_HTTP_PORT": str(sidecar.http_port)} if sidecar is not None else {}
    service = ManagedProcess("citylake-query", argv, workdir / "query.log", env)
    log_path = workdir / "query.log"  # appended to by each run: read this run's part
    log_from = log_path.stat().st_size if log_path.exists() else 0
    stack.callback(service.start().stop)
    say("query service started; the hot tier rebuilds from the lake (/healthz 503 until done) ...")
    started = time.perf_counter()

    def ready() -> bool:
        # A failed rebuild leaves /healthz 503 for good: stop, saying why, not after two hours.
        with log_path.open("rb") as log:
            log.seek(log_from)
            failed = b"hot tier rebuild from the lake failed" in log.read()
        if failed:
            raise SystemExit(f"the hot tier's rebuild failed (see {log_path}); try --service-memory-mb")
        return _ok(f"http://127.0.0.1:{query_port}/healthz")

    service.wait_until(ready, 7200, "/healthz 200 (hot tier ready)")
    rebuilt = time.perf_counter() - started
    say(f"hot tier ready: {rebuilt:.1f} s from start; waiting for the serving store to catch up ...")
    store_ready = wait_for_store(service, f"http://127.0.0.1:{query_port}", started)
    floor_argv = [sys.executable, str(BENCH / "http_floor.py"), "--port", str(floor_port)]
    floor = ManagedProcess("http-floor", floor_argv, workdir / "floor.log").start()
    stack.callback(floor.stop)
    floor.wait_port(floor_port)
    services = Services(hot_rebuild_s=rebuilt, store_ready_s=store_ready)
    services.bases = {"direct": f"http://127.0.0.1:{query_port}", "floor": f"http://127.0.0.1:{floor_port}"}
    if sidecar is not None:
        floor_sidecar = start_daprd("floor", floor_port, workdir / "dapr-floor", mosquitto.url)
        stack.callback(floor_sidecar.process.stop)
        services.bases |= {"daprd": sidecar.http_url, "floor_daprd": floor_sidecar.http_url}
    services.prefixes = {
        "direct": "",
        "daprd": "/v1.0/invoke/query/method",
        "floor": "",
        "floor_daprd": "/v1.0/invoke/floor/method",
    }
    for target in services.targets:  # the app channels are up before anything is timed
        url = services.bases[target] + services.prefixes[target] + "/v1/devices/dev-000000/latest"
        service.wait_until(partial(_ok, url), 60, f"{target} answering")
    return services


# -- answers (checked alike before anything is timed) -----------------------

LATEST_SQL = """
SELECT metric, ts, value, text, unit, quality FROM {readings}
WHERE device_id = $device
QUALIFY row_number() OVER (PARTITION BY metric ORDER BY ts DESC, ingest_ts DESC) = 1
ORDER BY metric
"""
RANGE_SQL = """
SELECT ts, metric, value, text, unit, quality FROM {readings}
WHERE device_id = $device AND ts >= $start AND ts < $end
ORDER BY ts, metric
"""
CITYWIDE_SQL = """
SELECT window_start, count(*) AS devices, CAST(sum(count) AS BIGINT) AS count, min(min), max(max),
       sum(avg * count) / sum(count) AS avg
FROM {readings_1h}
WHERE metric = $metric AND window_start >= $start AND window_start < $end
GROUP BY window_start ORDER BY window_start
"""
DISTRICT_SQL = """
SELECT r.device_id, r.value FROM {readings} r JOIN {devices} d USING (device_id)
WHERE d.civil_code LIKE $district || '%' AND r.metric = $metric
QUALIFY row_number() OVER (PARTITION BY r.device_id ORDER BY r.ts DESC, r.ingest_ts DESC) = 1
ORDER BY r.device_id
"""
MONTH_SQL = """
SELECT ts, metric, value FROM {readings}
WHERE device_id = '{device}' AND metric = '{metric}'
  AND ts >= TIMESTAMPTZ '{start}' AND ts < TIMESTAMPTZ '{end}'
ORDER BY ts
"""


def month_sql(ask: Ask, readings: str = "readings") -> str:
    """The analyst's statement: literals, as an analyst types them."""
    return MONTH_SQL.format(readings=readings, device=ask.device, metric=ask.metric,
                            start=iso(ask.start), end=iso(ask.end))  # fmt: skip


PG_SQL = {
    # Newest first in the key's own order (backwards on the index), one row per metric.
    "latest": "SELECT * FROM (SELECT DISTINCT ON (metric) metric, ts, value, text, unit, quality "
    "FROM readings WHERE device_id = %(device)s ORDER BY metric DESC, ts DESC) latest ORDER BY metric",
    "range": "SELECT ts, metric, value, text, unit, quality FROM readings "
    "WHERE device_id = %(device)s AND ts >= %(start)s AND ts < %(end)s ORDER BY ts, metric",
    "week_ago": "SELECT ts, metric, value, text, unit, quality FROM readings "
    "WHERE device_id = %(device)s AND ts >= %(start)s AND ts < %(end)s ORDER BY ts, metric",
    "citywide": "SELECT window_start, count(*), sum(count), min(min), max(max), "
    "sum(avg * count) / sum(count) FROM readings_1h "
    "WHERE metric = %(metric)s AND window_start >= %(start)s AND window_start < %(end)s "
    "GROUP BY window_start ORDER BY window_start",
}

Answer = list[tuple[Any, ...]]
Asker = Callable[[str, Ask], Answer]


def params(ask: Ask) -> dict[str, object]:
    return {"device": ask.device, "metric": ask.metric, "start": ask.start, "end": ask.end}


def duckdb_asker(conn: duckdb.DuckDBPyConnection, sources: dict[str, str]) -> Asker:
    statements = {
        key: sql.format(**sources)
        for key, sql in (
            ("latest", LATEST_SQL),
            ("range", RANGE_SQL),
            ("week_ago", RANGE_SQL),
            ("citywide", CITYWIDE_SQL),
            ("district", DISTRICT_SQL),
        )
    }
    needs = {
        "latest": ("device",),
        "range": ("device", "start", "end"),
        "week_ago": ("device", "start", "end"),
        "citywide": ("metric", "start", "end"),
        "district": ("district", "metric"),
    }

    def ask_(question: str, ask: Ask) -> Answer:
        if question == "sql_month":
            return conn.execute(month_sql(ask, sources["readings"])).fetchall()
        values = params(ask) | {"district": ask.device}
        return conn.execute(statements[question], {k: values[k] for k in needs[question]}).fetchall()

    return ask_


def fingerprint(question: str, rows: Answer) -> list[tuple[Any, ...]]:
    """What must agree across systems: metrics and values, or the aggregate."""
    if question == "latest":
        return [(r[0], r[2]) for r in rows]
    if question in ("range", "week_ago"):
        return [(r[1], r[2]) for r in rows]
    if question == "district":
        return [(r[0], r[-1]) for r in rows]
    if question == "sql_month":
        return [(r[-1],) for r in rows]
    return [(int(r[1]), int(r[2]), float(r[5])) for r in rows]


def http_fingerprint(question: str, body: dict[str, Any]) -> list[tuple[Any, ...]]:
    if question == "latest":
        return [(r["metric"], r["value"]) for r in body["readings"]]
    if question in ("range", "week_ago"):
        return [(r["metric"], r["value"]) for r in body["items"]]
    if question == "district":
        return [(r["device_id"], r["value"]) for r in body["items"]]
    if question == "sql_month":
        return [(row[-1],) for row in body["rows"]]
    return [(i["devices"], i["count"], float(i["avg"])) for i in body["items"]]


# An average over millions of rollup rows depends on the order the sums are
# taken in (DuckDB's threads, PostgreSQL's plan): the last digits differ, not
# the answer. 94.991693 from the service and 94.991692 from DuckDB on the same
# rollups (--devices 10000) were both right; rounding both to 6 places made
# them disagree. Values agree within this relative tolerance; counts exactly.
AVG_REL_TOL = 1e-9


def same_answer(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> bool:
    if len(got) != len(expected):
        return False
    for left, right in zip(got, expected, strict=True):
        if len(left) != len(right):
            return False
        for a, b in zip(left, right, strict=True):
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=AVG_REL_TOL):
                    return False
            elif a != b:
                return False
    return True


def http_ask(client: httpx.Client, base: str, question: str, ask: Ask) -> httpx.Response:
    if question == "sql_month":
        return client.post(base + "/v1/sql", json={"sql": month_sql(ask), "format": "json"}, timeout=60)
    return client.get(base + ask.path(question), timeout=60)


def check_http(services: Services, reference: Asker, samples: dict[str, list[Ask]]) -> None:
    client = httpx.Client()
    for question, asked in samples.items():
        for ask in asked:
            expected = fingerprint(question, reference(question, ask))
            for target in services.services:
                response = http_ask(client, services.bases[target] + services.prefixes[target], question, ask)
                response.raise_for_status()
                got = http_fingerprint(question, response.json())
                if not same_answer(got, expected):
                    raise SystemExit(f"{target} {question} {ask}: {got[:3]} != DuckDB's {expected[:3]}")
    say(f"answers agree: the service (direct and via daprd) and DuckDB on {', '.join(samples)}")


# -- timing -----------------------------------------------------------------


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of the machine's CPU time in use over ``seconds`` (all processes)."""

    # psutil counts idle and iowait as not busy, as this measure always did.
    return psutil.cpu_percent(interval=seconds) / 100


@dataclass(frozen=True)
class Plan:
    questions: list[str]
    rate: dict[str, float]
    seconds: dict[str, float]
    warmup_s: float
    baseline_queries: int
    connections: int
    quiet_below: float  # wait for the machine to be this idle before each timed run ...
    quiet_wait_s: float  # ... but no longer than this

    def warm(self, question: str) -> int:
        return round(self.rate[question] * self.warmup_s)

    def measured(self, question: str) -> int:
        return round(self.rate[question] * self.seconds[question])

    def settle(self) -> float:
        """Wait (bounded) until other work on the shared machine quietens; the
        CPU share in use before the run, for the record."""
        deadline = time.monotonic() + self.quiet_wait_s
        busy = cpu_busy()
        while busy > self.quiet_below and time.monotonic() < deadline:
            busy = cpu_busy(5.0)
        return busy


@dataclass(frozen=True)
class Row:
    """One line of the table: a question at an offered rate."""

    question: str
    rate: float

    @property
    def label(self) -> str:
        if self.question in SEQUENTIAL:
            return f"{QUESTIONS[self.question]}, serial"
        return f"{QUESTIONS[self.question]} @{self.rate:g}/s"


@dataclass
class Figures:
    """Latencies (ms) per row and HTTP target, per question and baseline."""

    http: dict[tuple[Row, str], LoadResult] = field(default_factory=dict)
    busy: dict[tuple[Row, str], float] = field(default_factory=dict)
    baselines: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def time_asker(asker: Asker, question: str, warm: list[Ask], measured: list[Ask]) -> list[float]:
    for ask in warm:
        asker(question, ask)
    latencies = []
    for ask in measured:
        started = time.perf_counter()
        asker(question, ask)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def http_row(services: Services, inputs: list[Ask], row: Row, plan: Plan, figures: Figures) -> None:
    figures.rows.append(row)
    for target in services.targets:
        paths = [services.prefixes[target] + ask.path(row.question) for ask in inputs]
        busy = plan.settle()
        result = open_loop(
            services.bases[target],
            paths,
            row.rate,
            plan.seconds[row.question],
            plan.warmup_s,
            plan.connections,
        )
        figures.http[(row, target)] = result
        figures.busy[(row, target)] = busy
        served = ", ".join(f"{k} {v}" for k, v in sorted(result.served_from.items()))
        errors = f", errors {dict(result.errors)}" if result.errors else ""
        say(
            f"  {row.label:38} {HEADINGS[target]:16} p50 {quantile(result.latencies_ms, 0.5):8.2f} ms "
            f"p99 {quantile(result.latencies_ms, 0.99):9.2f} ms  {result.achieved_rate:6.1f}/s  "
            f"served from: {served}{errors}  (machine {busy:.0%} busy before)"
        )


def sequential_row(services: Services, inputs: list[Ask], row: Row, plan: Plan, figures: Figures) -> None:
    """One request at a time (what an analyst does), each timed from send to answer."""
    figures.rows.append(row)
    client = httpx.Client()
    warm, count = plan.warm(row.question), plan.measured(row.question)
    for target in services.services:
        base = services.bases[target] + services.prefixes[target]
        busy = plan.settle()
        for ask in inputs[:warm]:
            http_ask(client, base, row.question, ask)
        result = LoadResult(offered_rate=0.0, seconds=0.0)
        started = time.perf_counter()
        for ask in inputs[warm : warm + count]:
            sent = time.perf_counter()
            response = http_ask(client, base, row.question, ask)
            if response.status_code != 200:
                result.errors[str(response.status_code)] += 1
                continue
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
        result.seconds = time.perf_counter() - started
        result.achieved_rate = len(result.latencies_ms) / result.seconds
        figures.http[(row, target)] = result
        figures.busy[(row, target)] = busy
        errors = f", errors {dict(result.errors)}" if result.errors else ""
        say(
            f"  {row.label:38} {HEADINGS[target]:16} p50 {quantile(result.latencies_ms, 0.5):8.2f} ms "
            f"p99 {quantile(result.latencies_ms, 0.99):9.2f} ms  ({len(result.latencies_ms)} one at a time"
            f"{errors}; machine {busy:.0%} busy before)"
        )


def run_http(services: Services, inputs: dict[str, list[Ask]], plan: Plan, figures: Figures) -> None:
    """Each question at its offered rate; one the service cannot keep up with
    (under 90 % of the offered rate achieved) again at half what it achieved,
    for its latency below saturation."""
    for question in plan.questions:
        if question in SEQUENTIAL:
            sequential_row(services, inputs[question], Row(question, 0), plan, figures)
            continue
        row = Row(question, plan.rate[question])
        http_row(services, inputs[question], row, plan, figures)
        achieved = min(figures.http[(row, t)].achieved_rate for t in services.services)
        if achieved < 0.9 * row.rate:
            reduced = Row(question, max(1.0, float(round(achieved / 2))))
            say(f"  overloaded at {row.rate:g}/s (achieved {achieved:.0f}/s): again at {reduced.rate:g}/s")
            http_row(services, inputs[question], reduced, plan, figures)


def run_baselines(
    askers: dict[str, Asker], inputs: dict[str, list[Ask]], plan: Plan, figures: Figures
) -> None:
    for question in plan.questions:
        label = QUESTIONS[question]
        warm = plan.warm(question)
        count = plan.measured(question) if question in ("citywide", "sql_month") else plan.baseline_queries
        for name, asker in askers.items():
            if name == "postgres" and question not in PG_SQL:
                continue  # not loaded into PostgreSQL (devices) or not asked of it (analyst SQL)
            busy = plan.settle()
            latencies = time_asker(
                asker, question, inputs[question][:warm], inputs[question][warm : warm + count]
            )
            figures.baselines[(question, name)] = latencies
            say(
                f"  {label:30} {HEADINGS[name]:20} p50 {quantile(latencies, 0.5):8.2f} ms "
                f"p99 {quantile(latencies, 0.99):8.2f} ms  ({len(latencies)} queries; "
                f"machine {busy:.0%} busy before)"
            )


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def _cell(values: Sequence[float] | None, width: int) -> str:
    text = f"{_ms(quantile(values, 0.5))} / {_ms(quantile(values, 0.99))}" if values else "—"
    return " " + text.rjust(width - 1)


def report(figures: Figures) -> None:
    baselines = [b for b in BASELINES if any((q, b) in figures.baselines for q in QUESTIONS)]
    targets = [t for t in HTTP_TARGETS if any(key[1] == t for key in figures.http)]
    width = 20
    say(
        "\np50 / p99 in ms. HTTP: open loop at the row's rate, latency from each request's due time. "
        "Baselines: in process, one query at a time (rate-independent)."
    )
    say(
        f"{'question':40}"
        + "".join(f"{HEADINGS[s]:>{width}}" for s in targets + baselines)
        + "   p99 / best baseline p99"
    )
    for row in figures.rows:
        measured = {t: figures.http[(row, t)] for t in targets if (row, t) in figures.http}
        cells = [_cell(measured[t].latencies_ms if t in measured else None, width) for t in targets]
        cells += [_cell(figures.baselines.get((row.question, b)), width) for b in baselines]
        best = min(
            (
                quantile(figures.baselines[(row.question, b)], 0.99)
                for b in baselines
                if (row.question, b) in figures.baselines
            ),
            default=float("nan"),
        )
        ratios = [
            f"{t} {quantile(measured[t].latencies_ms, 0.99) / best:.2f}"
            for t in targets
            if t in ("direct", "daprd") and t in measured
        ]
        say(f"{row.label:40}" + "".join(cells) + "   " + ", ".join(ratios))
    say("\nachieved rate, requests/s (offered = the row's rate):")
    for row in figures.rows:
        parts = [
            f"{HEADINGS[t]} {figures.http[(row, t)].achieved_rate:.0f}"
            for t in targets
            if (row, t) in figures.http
        ]
        say(f"  {row.label:38} " + ", ".join(parts))


# -- main -------------------------------------------------------------------


def prepare(size: Size, workdir: Path, pg: PgCluster | None) -> DataLayout:
    state = State(workdir, size)
    layout = DataLayout(workdir / "data")

    phase(
        state,
        "generate",
        f"generating {size.readings:,} readings into the lake",
        lambda: build_readings(layout, workdir, size),
    )
    phase(state, "rollups", "readings_1h by DuckDB (not the Flink rollups job, for time)",
          lambda: build_rollups(layout, workdir))  # fmt: skip
    phase(state, "native", "native DuckDB tables", lambda: build_native(layout, workdir / "native.duckdb"))
    if pg is not None:
        if state.done("pg_load") is None:
            remove(pg.datadir)
        pg.init()
        pg.start()
        phase(state, "pg_load", "PostgreSQL: COPY", lambda: pg_load(pg, layout, workdir, size))
        phase(state, "pg_index", "PostgreSQL: primary keys, VACUUM ANALYZE", lambda: pg_index(pg))
    phase(state, "devices", "devices table (lake and native)",
          lambda: build_devices(layout, workdir / "native.duckdb", size))  # fmt: skip
    lake_bytes = sum(f.stat().st_size for f in layout.lake_root.rglob("part-*"))
    say(f"lake: {lake_bytes / 2**20:.0f} MiB ({lake_bytes / size.readings:.2f} B/reading with readings_1h)")
    say("phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in state.saved["seconds"].items()))
    return layout


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--metrics", type=int, default=10, choices=range(1, len(METRICS) + 1))
    parser.add_argument(
        "--samples", type=int, default=144, help="samples per device and metric, 10 min apart"
    )
    parser.add_argument(
        "--days",
        type=int,
        help="days of data (sets --samples to 144 a day); 8 or more adds the day-a-week-ago question",
    )
    parser.add_argument(
        "--lake-rate", type=float, default=50, help="requests/s for a day a week ago (read from the lake)"
    )
    parser.add_argument("--rate", type=float, default=500, help="requests/s for the point questions")
    parser.add_argument(
        "--seconds", type=float, default=10, help="measured seconds per point question and target"
    )
    parser.add_argument("--questions", help=f"comma-separated subset of {','.join(QUESTIONS)}")
    parser.add_argument("--citywide-rate", type=float, default=2)
    parser.add_argument("--district-rate", type=float, default=50, help="requests/s for district latest")
    parser.add_argument("--sql-queries", type=int, default=50, help="analyst SQL queries, one at a time")
    parser.add_argument("--citywide-seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=32, help="HTTP keep-alive connections")
    parser.add_argument("--baseline-queries", type=int, default=2000, help="per point question and baseline")
    parser.add_argument(
        "--service-memory-mb", type=int, help="services.query.memory_limit_mb (default: its own)"
    )
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.5,
        help="before each timed run wait until the machine's CPU is less busy than this share ...",
    )
    parser.add_argument("--quiet-wait", type=float, default=300, help="... for at most this many seconds")
    parser.add_argument("--seed", type=int, default=20261120)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--prepare-only", action="store_true", help="make the data (lake, DuckDB, PostgreSQL) and stop"
    )
    parser.add_argument("--workdir", type=Path, help="where data is made and kept (default: a temp dir)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the data for a rerun (else deleted at the end)"
    )
    args = parser.parse_args()
    if not 0 < args.devices <= 1_000_000:
        parser.error("--devices must be 1..1,000,000 (device ids have 6 digits)")
    return args


def main() -> None:
    args = parse_args()
    size = Size(args.devices, args.metrics, args.samples if args.days is None else 144 * args.days)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-services-"))
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    # DuckDB spills big sorts to .tmp under the working directory, and so do
    # the services started from here: in the workdir, not the repository.
    os.chdir(workdir)
    plan = Plan(
        questions=[q for q in size.questions() if args.questions is None or q in args.questions.split(",")],
        rate={
            "latest": args.rate,
            "range": args.rate,
            "week_ago": args.lake_rate,
            "citywide": args.citywide_rate,
            "district": args.district_rate,
            "sql_month": 1.0,
        },
        seconds={
            "latest": args.seconds,
            "range": args.seconds,
            "week_ago": args.seconds,
            "citywide": args.citywide_seconds,
            "district": args.seconds,
            "sql_month": args.sql_queries,
        },
        warmup_s=args.warmup,
        baseline_queries=args.baseline_queries,
        connections=args.connections,
        quiet_below=args.quiet_below,
        quiet_wait_s=args.quiet_wait,
    )
    say(
        f"bench_services: {size.readings:,} readings ({size.devices:,} devices x {size.metrics} metrics x "
        f"{size.samples} samples 10 min apart) in {workdir}; {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}"
    )
    pg: PgCluster | None = None
    if not args.no_postgres:
        try:
            require_binaries()
            _psycopg()
            pg = PgCluster(workdir / "pg", free_port())
        except PostgresUnavailable as exc:
            say(f"PostgreSQL baseline skipped: {exc}")
    try:
        run(args, size, workdir, plan, pg)
    finally:
        if pg is not None:
            pg.stop()
        if args.keep:
            say(f"data kept in {workdir} (rerun with --workdir {workdir} to skip generation and loading)")
        else:
            for name in ("data", "native.duckdb", "pg", "pg-csv", ".tmp", "state.json"):
                remove(workdir / name)
            if args.workdir is None:
                shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, size: Size, workdir: Path, plan: Plan, pg: PgCluster | None) -> None:
    layout = prepare(size, workdir, pg)
    if args.prepare_only:
        return
    possible = size.questions()
    skipped = [f"{QUESTIONS[q]} (needs --days {NEEDS_DAYS[q]})" for q in QUESTIONS if q not in possible]
    if skipped:
        say(f"skipped, the data spans {size.days or 'under one'} day(s): {', '.join(skipped)}")
    count = max(plan.warm(q) + max(plan.measured(q), plan.baseline_queries) for q in plan.questions)
    inputs = {q: asks(size, q, count, args.seed + i) for i, q in enumerate(QUESTIONS) if q in plan.questions}
    native = duckdb.connect(str(workdir / "native.duckdb"), read_only=True)
    native.execute("SET TimeZone = 'UTC'")
    reference = duckdb_asker(
        native, {"readings": "readings", "readings_1h": "readings_1h", "devices": "devices"}
    )
    figures = Figures()
    with ExitStack() as stack:
        services = start_services(stack, workdir, layout.data_dir, args.service_memory_mb)
        check_http(services, reference, {q: inputs[q][:1] for q in plan.questions})
        say(f"\nHTTP, open loop ({plan.warmup_s:g} s warm-up, then measured):")
        run_http(services, inputs, plan, figures)
    say("services stopped")
    parquet = duckdb.connect()
    parquet.execute("SET TimeZone = 'UTC'; SET parquet_metadata_cache = true")
    askers = {
        "native": reference,
        "parquet": duckdb_asker(
            parquet,
            {
                "readings": f"read_parquet({lake_files(layout, 'readings')})",
                "readings_1h": f"read_parquet({lake_files(layout, 'readings_1h')})",
                "devices": f"read_parquet({lake_files(layout, 'devices')})",
            },
        ),
    }
    if pg is not None:
        say(pg_prewarm(pg))
    # Last into the page cache, so PostgreSQL's far bigger files cannot push them out.
    warm_files([workdir / "native.duckdb", *layout.lake_root.rglob("part-*")])
    if pg is not None:
        conn = _psycopg().connect(pg.conninfo(), autocommit=True)
        askers["postgres"] = lambda question, ask: conn.execute(PG_SQL[question], params(ask)).fetchall()
    check_baselines(askers, {q: inputs[q][:1] for q in plan.questions})
    say("\nbaselines, in this process, one query at a time:")
    run_baselines(askers, inputs, plan, figures)
    report(figures)
    say(f"\nserving store caught up {services.store_ready_s:.1f} s after start; "
        f"hot tier rebuilt from the lake in {services.hot_rebuild_s:.1f} s at start; "
        f"readings_1h computed by DuckDB (not the Flink rollups job), for time")  # fmt: skip


def check_baselines(askers: dict[str, Asker], samples: dict[str, list[Ask]]) -> None:
    reference = askers["native"]
    for question, asked in samples.items():
        for ask in asked:
            expected = fingerprint(question, reference(question, ask))
            for name, asker in askers.items():
                if name == "postgres" and question not in PG_SQL:
                    continue
                got = fingerprint(question, asker(question, ask))
                if not same_answer(got, expected):
                    raise SystemExit(f"{name} {question} {ask}: {got[:3]} != DuckDB native's {expected[:3]}")
    say(f"answers agree: {', '.join(askers)} on {', '.join(samples)}")


if __name__ == "__main__":
    main()
