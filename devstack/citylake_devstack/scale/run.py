"""The scale run: the whole stack on this machine under a city's load, sampled.

Started in order, each waited for: mosquitto; the Modbus gateways (pymodbus
servers); the ingest sidecar (daprd, for the live feed); one ``citylake
ingest`` process per protocol (so each one's CPU shows on its own); the
streaming Flink jobs; the query service beside its daprd, its hot tier fed by
the live feed. A marker reading then goes the whole way (edge -> landing ->
Flink -> lake) before the clock starts. Under load: the GB28181 storm (SIPp),
the MQTT fleet, freshness markers and the query load generator, sampled every
few seconds. At the end (or on Ctrl-C) everything is stopped in reverse order
and /proc is checked for anything of the run still alive.

With ``plan.edge_box`` the edge's own processes (mosquitto, both daprd, every
ingest, the Flink job(s), the query service) start inside a cgroup of the edge
node's size (edgebox.py) and with the edge overlay's settings
(edge_settings.py); the simulators, the load generators and this orchestrator
stay outside. The box is sampled with the rest and removed at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from ruamel.yaml import YAML

from citylake.schemas import DataLayout
from citylake_devstack.components import Daprd, Mosquitto, start_daprd, start_mosquitto, start_service
from citylake_devstack.ingest_probe import IngestProbe
from citylake_devstack.modbus_sim import start_modbus_simulator
from citylake_devstack.process import CITYLAKE, ComponentUnavailable, ManagedProcess, free_port
from citylake_devstack.scale.edge_settings import EdgeSettings, edge_settings
from citylake_devstack.scale.edgebox import BoxLimits, BoxReading, EdgeBox, members
from citylake_devstack.scale.fleet import read_status
from citylake_devstack.scale.load import MarkerPublisher
from citylake_devstack.scale.plan import (
    GB28181,
    GB28181_DOMAIN,
    GB28181_PASSWORD,
    GB28181_PLATFORM,
    MARKER_DEVICE,
    MODBUS,
    MQTT,
    SOURCE_NAMES,
    ScalePlan,
    write_scale_config,
)
from citylake_devstack.scale.probes import (
    LakeWatcher,
    LandingWatcher,
    Metrics,
    ProcessSampler,
    by_label,
    mem_available_mb,
    mem_total_mb,
    processes_mentioning,
    read_proc,
    scrape,
    total,
)
from citylake_devstack.scale.queries import read_rows, start_at
from citylake_devstack.scalereport.record import RunInfo, RunRecord, Sample
from citylake_devstack.scalereport.summary import FLINK_JVM_RSS, landed_total
from citylake_devstack.sipp import Sipp, read_stats, sim_devices

log = logging.getLogger(__name__)
Status = Callable[[str], None]
WARM_UP_TIMEOUT_S = 300.0
# How long the query load process may take to be ready to send.
QUERY_LOAD_READY_S = 60.0
# The load's processes: one that exits is noted in the record, not a failed start.
LOAD_PROCESSES = ("mqtt-fleet", "query-load", "sipp keepalive_loop")


@dataclass
class ScaleRun:
    """``run()`` once; ``record`` fills as it goes (``on_sample`` is told of
    each new sample, ``status`` of each step)."""

    plan: ScalePlan
    workdir: Path
    status: Status = lambda _: None
    on_sample: Callable[[RunRecord], None] = lambda _: None
    record: RunRecord = field(init=False)
    failure: str | None = None

    def __post_init__(self) -> None:
        self.processes: list[ManagedProcess] = []
        self.sampler = ProcessSampler()
        self.sampler.add("orchestrator", os.getpid())
        self.broker: Mosquitto | None = None
        self.query_sidecar: Daprd | None = None
        self.ingest_ports: dict[str, int] = {}
        self.query_port = 0
        self.sipp: Sipp | None = None
        self.fleet: ManagedProcess | None = None
        self.markers: MarkerPublisher | None = None
        self.queries: ManagedProcess | None = None
        self.data_dir = self.workdir / "data"
        self.layout = DataLayout(self.data_dir)
        self.landing = LandingWatcher(self.layout, frozenset({MARKER_DEVICE}))
        self.lake = LakeWatcher(self.layout, MARKER_DEVICE)
        self._lake_stop = threading.Event()
        self._t0 = 0.0
        self._wall0 = 0.0
        self.sip_port = 0
        self._http = httpx.Client()
        self._dead_noted: set[str] = set()
        self._last_metrics: dict[str, Metrics] = {}
        self._scrapes_failed = 0
        self.box: EdgeBox | None = None
        self.edge: EdgeSettings | None = None
        self._box_last: tuple[BoxReading, float] | None = None
        self.record = RunRecord(
            RunInfo(
                started_at="",
                planned_s=self.plan.minutes * 60,
                plan={**self.plan.describe(), "devices": dict(self.plan.devices)},
                machine={
                    "cores": os.cpu_count() or 0,
                    "mem_total_mb": round(mem_total_mb()),
                    "load_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
                },
                workdir=str(self.workdir),
            )
        )

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> RunRecord:
        """Start, warm up, load, stop. Ctrl-C ends the load early; a component
        that cannot start ends the run (``failure`` says why). Everything
        started is stopped either way, and the record says what stopping found."""
        wall = time.monotonic()
        try:
            self._start_stack()
            self._warm_up()
            self.record.info.warmup_s = round(time.monotonic() - wall, 1)
            self._load()
        except KeyboardInterrupt:
            self.record.info.interrupted = True
            self.record.info.notes.append("interrupted (Ctrl-C)")
        except ComponentUnavailable as exc:
            self.failure = str(exc)
            self.record.info.notes.append(f"stopped early: {exc}"[:2000])
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
            try:
                self._stop_everything()
            finally:
                try:
                    self._remove_box()  # after its processes are gone
                finally:
                    if previous is not None:
                        signal.signal(signal.SIGINT, previous)
            self.record.info.wall_s = round(time.monotonic() - wall, 1)
        return self.record

    def _remove_box(self) -> None:
        if self.box is None:
            return
        try:
            killed = self.box.remove()
        except OSError as exc:
            self.record.info.notes.append(f"edge box cgroup {self.box.name} not removed: {exc}")
            return
        if killed:
            self.record.info.notes.append(f"edge box: {len(killed)} processes still in it were killed")

    def _prefix(self) -> list[str]:
        """What puts an edge process in the box (nothing without one)."""
        return self.box.prefix if self.box is not None else []

    def _add(self, name: str, process: ManagedProcess, boxed: bool = False) -> ManagedProcess:
        """Track a started process; ``boxed``: it was started in the edge box."""
        self.processes.append(process)
        self.sampler.add(name, process.pid)
        if boxed and self.box is not None:
            self.record.info.box["inside"].append(name)
        return process

    def _citylake(self, name: str, args: list[str], env: dict[str, str] | None = None) -> ManagedProcess:
        """An edge process of citylake (ingest, a Flink job): in the box if there is one."""
        argv = [*CITYLAKE, *args]
        environment = {"CITYLAKE_LOG_LEVEL": "WARNING", **(env or {})}
        process = ManagedProcess(
            name, argv, self.workdir / f"{name}.log", env=environment, prefix=self._prefix()
        )
        return self._add(name, process.start(), boxed=True)

    def _start_stack(self) -> None:
        plan = self.plan
        self.workdir.mkdir(parents=True, exist_ok=True)
        if plan.edge_box:
            self.status(
                f"making the edge box: {plan.edge_box_cpus:g} CPUs, {plan.edge_box_memory_mb} MiB (cgroup v1)"
            )
            self.edge = edge_settings()
            self.box = EdgeBox.create(BoxLimits(plan.edge_box_cpus, plan.edge_box_memory_mb))
            self.record.info.box = {
                **self.box.describe(),
                "edge_settings": self.edge.describe(),
                "inside": [],
            }
        self.status("starting mosquitto")
        self.broker = start_mosquitto(
            self.workdir / "mosquitto",
            extra_settings=self.edge.broker if self.edge else (),
            prefix=self._prefix(),
        )
        self._add("mosquitto", self.broker.process, boxed=True)

        modbus_source = None
        if plan.devices[MODBUS]:
            gateways = -(-plan.devices[MODBUS] // plan.modbus_per_gateway)
            self.status(
                f"starting {plan.devices[MODBUS]:,} Modbus meters behind {gateways} gateways (pymodbus)"
            )
            server, written = start_modbus_simulator(
                self.workdir / "modbus",
                plan.devices[MODBUS],
                per_endpoint=plan.modbus_per_gateway,
                profile=plan.modbus_profile,
                step_s=plan.modbus_interval_s,
                interval_s=plan.modbus_interval_s,
            )
            self._add("modbus-gateways", server)
            modbus_source = _plain(YAML(typ="safe").load(written.read_text())["sources"][0])

        self.sip_port = free_port()
        config = write_scale_config(
            self.workdir / "city.yaml",
            plan,
            self.data_dir,
            self.broker.url,
            modbus_source,
            self.sip_port,
            self.edge,
        )
        self.config_path = config
        protocols = [p for p in (GB28181, MQTT, MODBUS) if plan.devices[p] or p == MQTT]
        self.ingest_ports = {p: free_port() for p in protocols}

        self.status("starting the ingest sidecar (daprd) for the live feed")
        ingest_sidecar = start_daprd(
            "ingest",
            self.ingest_ports[MQTT],
            self.workdir / "dapr-ingest",
            self.broker.url,
            prefix=self._prefix(),
        )
        self._add("daprd-ingest", ingest_sidecar.process, boxed=True)
        for protocol in protocols:
            # One at a time: each recovers the shared landing zone at start.
            self.status(f"starting ingest for {protocol} ({SOURCE_NAMES[protocol]})")
            port = self.ingest_ports[protocol]
            process = self._citylake(
                f"ingest-{protocol}",
                [
                    "ingest",
                    "--config",
                    str(config),
                    "--source",
                    SOURCE_NAMES[protocol],
                    "--metrics-port",
                    str(port),
                ],
                {"DAPR_HTTP_PORT": str(ingest_sidecar.http_port)},
            )
            process.wait_until(IngestProbe(port).healthy, 120, "ingest healthy")

        # As `citylake run` runs them (pipelines.combine): every job in ONE
        # Flink job and mini-cluster JVM; a JVM each otherwise.
        groups = [list(plan.jobs)] if plan.combine else [[job] for job in plan.jobs]
        for jobs in groups:
            name = f"flink-{'jobs' if len(jobs) > 1 else jobs[0]}"
            self.status(f"starting the streaming Flink job {name} ({', '.join(jobs)}; mini-cluster)")
            self._citylake(
                name,
                [
                    "pipeline",
                    "run",
                    ",".join(jobs),
                    "--mode",
                    "streaming",
                    "--config",
                    str(config),
                    "--fresh",
                ],
            )

        self.status("starting the query service beside its daprd (hot tier fed by the live feed)")
        self.query_port = free_port()
        self.query_sidecar = start_daprd(
            "query", self.query_port, self.workdir / "dapr-query", self.broker.url, prefix=self._prefix()
        )
        self._add("daprd-query", self.query_sidecar.process, boxed=True)
        service = start_service(
            "query",
            config,
            self.query_port,
            self.workdir,
            env={"DAPR_HTTP_PORT": str(self.query_sidecar.http_port), "CITYLAKE_LOG_LEVEL": "WARNING"},
            prefix=self._prefix(),
        )
        self._add("query", service, boxed=True)

    def _warm_up(self) -> None:
        """A marker through the whole path before the clock runs: JVM and job
        start-up, Dapr subscriptions and the first checkpoint are not freshness."""
        assert self.broker is not None and self.query_sidecar is not None
        self.status("warming up: a marker reading through ingest, Flink and the live feed")
        warm = MarkerPublisher(self.broker.url, 1.0, lambda: 0.0)
        client = warm.connect("warm-up")
        started = time.monotonic()
        latest = self._query_url(f"v1/devices/{MARKER_DEVICE}/latest")
        in_lake = in_hot = False
        try:
            while not (in_lake and in_hot):
                if time.monotonic() - started > WARM_UP_TIMEOUT_S:
                    missing = "the lake" if not in_lake else "the query service's hot tier"
                    raise ComponentUnavailable(
                        f"warm-up: no marker reading in {missing} after {WARM_UP_TIMEOUT_S:.0f}s; "
                        f"logs in {self.workdir}"
                    )
                self._check_alive()
                warm.publish_one(client, -1)
                for _ in range(10):
                    self.lake.poll()
                    in_lake = in_lake or -1 in self.lake.markers
                    with contextlib.suppress(httpx.HTTPError):
                        in_hot = in_hot or self._http.get(latest, timeout=5).status_code == 200
                    if in_lake and in_hot:
                        break
                    time.sleep(0.5)
                self.status(
                    f"warming up ({time.monotonic() - started:.0f}s): marker in the lake {in_lake}, "
                    f"in the hot tier {in_hot}"
                )
        finally:
            client.disconnect()
            client.loop_stop()

    def _query_url(self, path: str) -> str:
        if self.plan.query_via_dapr and self.query_sidecar is not None:
            return self.query_sidecar.invoke_url("query", path)
        return f"http://127.0.0.1:{self.query_port}/{path.lstrip('/')}"

    def clock(self) -> float:
        return time.monotonic() - self._t0

    def _load(self) -> None:
        assert self.broker is not None
        plan = self.plan
        # Its own process (scale/queries.py): in this one the load shared the
        # GIL with the sampler and reached 29 of 200 requests/s (issue 12).
        self.queries = self._add(
            "query-load",
            ManagedProcess(
                "query-load",
                [
                    sys.executable,
                    "-m",
                    "citylake_devstack.scale.queries",
                    "--url",
                    self._query_url("").rstrip("/"),
                    "--rate",
                    str(plan.query_rate),
                    "--go",
                    str(self.workdir / "queries.go"),
                    "--fleet-status",
                    str(self.workdir / "fleet.json"),
                    "--status",
                    str(self.workdir / "queries.json"),
                    "--out",
                    str(self.workdir / "queries.jsonl"),
                ],
                self.workdir / "query-load.log",
            ).start(),
        )
        self._wait_ready(self.queries, self.workdir / "queries.json")
        self._t0 = time.monotonic() + 0.2
        start_at(self.workdir / "queries.go", self._t0)
        time.sleep(0.2)
        self._wall0 = time.time()
        self.record.info.started_at = datetime.now(UTC).isoformat(timespec="seconds")
        # t = 0: the counters as the load starts (the warm-up's rows are not
        # the load's) and the baseline of CPU deltas.
        self.record.samples.append(self._sample())
        if plan.devices[GB28181]:
            self.status(
                f"GB28181 storm: {plan.devices[GB28181]:,} devices register at {plan.gb28181_rate:g}/s"
            )
            self.sipp = Sipp(
                self.workdir / "sipp",
                f"127.0.0.1:{self.sip_port}",
                "keepalive_loop",
                sim_devices(plan.devices[GB28181], GB28181_DOMAIN),
                {
                    "platform_id": GB28181_PLATFORM,
                    "domain": GB28181_DOMAIN,
                    "expires": str(int(max(3600, plan.minutes * 60 + 600))),
                },
                GB28181_PASSWORD,
                "udp",
                rate=plan.gb28181_rate,
                max_concurrent=plan.devices[GB28181],
                pause_ms=int(plan.gb28181_keepalive_s * 1000),
                recv_timeout_ms=30_000,
            ).start()
            self._add("sipp", self.sipp.process)
        self.status(
            f"MQTT fleet: {plan.devices[MQTT]:,} sensors, one message each every {plan.mqtt_period_s:g}s"
        )
        self.fleet = self._add(
            "mqtt-fleet",
            ManagedProcess(
                "mqtt-fleet",
                [
                    sys.executable,
                    "-m",
                    "citylake_devstack.scale.fleet",
                    "--url",
                    self.broker.url,
                    "--devices",
                    str(plan.devices[MQTT]),
                    "--period",
                    str(plan.mqtt_period_s),
                    "--status",
                    str(self.workdir / "fleet.json"),
                ],
                self.workdir / "mqtt-fleet.log",
            ).start(),
        )
        self.markers = MarkerPublisher(self.broker.url, plan.marker_every_s, self.clock)
        self.markers.start()
        lake_thread = threading.Thread(target=self._watch_lake, name="lake", daemon=True)
        lake_thread.start()
        # Under load Ctrl-C sets a flag the loop checks: a KeyboardInterrupt
        # raised wherever the signal lands (a weakref callback, a destructor)
        # would be swallowed by Python there, and the run would go on.
        interrupted = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: interrupted.set()) if _main_thread() else None
        try:
            end = plan.minutes * 60
            next_at = plan.sample_s
            while not interrupted.wait(max(0.0, next_at - self.clock())):
                self.record.samples.append(self._sample())
                self.on_sample(self.record)
                if self.clock() >= end:
                    break
                next_at += plan.sample_s
            if interrupted.is_set():
                self.record.info.interrupted = True
                self.record.info.notes.append(f"interrupted (Ctrl-C) at t={self.clock():.0f}s")
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.record.info.duration_s = round(self.clock(), 1)
            self._stop_load()
            self._lake_stop.set()
            lake_thread.join(10)
            self._collect_markers()

    def _mqtt_reported(self) -> int:
        return int(read_status(self.workdir / "fleet.json").get("devices_reported", 0))

    def _watch_lake(self) -> None:
        while not self._lake_stop.is_set():
            try:
                self.lake.poll()
            except Exception:  # never let the watcher die silently: note it and go on
                log.exception("lake watcher")
            self._lake_stop.wait(0.5)

    def _stop_load(self) -> None:
        self.status("stopping the load")
        self._stop_queries()
        if self.markers is not None:
            self.markers.stop()
        if self.fleet is not None:
            self.fleet.stop(20)
        if self.sipp is not None:
            result = self.sipp.stop()
            self.record.info.notes.append(
                f"SIPp: {result.stats.get('OutgoingCall(C)', '?')} devices started, "
                f"{result.failed} failed, {result.stats.get('Retransmissions(C)', '?')} retransmissions"
            )
        # Markers published in the last seconds need a checkpoint or two.
        if self.markers is not None:
            deadline = time.monotonic() + 3 * self.plan.checkpoint_s + 15
            self.status("waiting for the last markers to reach the lake")
            while time.monotonic() < deadline:
                self.lake.poll()
                if all(m.seq in self.lake.markers for m in self.markers.markers):
                    break
                time.sleep(0.5)
        self._drain()

    def _wait_ready(self, process: ManagedProcess, status: Path) -> None:
        deadline = time.monotonic() + QUERY_LOAD_READY_S
        while not read_status(status).get("ready"):
            if not process.alive():
                raise ComponentUnavailable(
                    f"{process.name} exited; log {process.log_path}:\n{process.log_tail(2000)}"
                )
            if time.monotonic() > deadline:
                raise ComponentUnavailable(
                    f"{process.name} not ready to send after {QUERY_LOAD_READY_S:.0f} s; "
                    f"log {process.log_path}"
                )
            time.sleep(0.05)

    def _stop_queries(self) -> None:
        """SIGTERM the load process; it waits out its requests in flight (up
        to its timeout) and writes every request to queries.jsonl."""
        if self.queries is None or self.record.queries:
            return
        self.queries.stop(20)
        rows = self.workdir / "queries.jsonl"
        try:
            self.record.queries = read_rows(rows)
        except (OSError, ValueError) as exc:
            self.record.info.notes.append(f"query load: no requests read from {rows}: {exc}")

    def _drain(self) -> None:
        """Wait (a bounded time) until the lake holds every reading ingest
        landed, and note both counts: "every acknowledged reading in the lake"
        is judged on these, after the load, not on a sample taken under it."""
        self.status("waiting for the lake to hold every landed reading")
        started = time.monotonic()
        deadline = started + 6 * self.plan.checkpoint_s + 60
        landed = in_lake = 0.0
        while True:
            probe = Sample(t=round(self.clock(), 2))
            self._sample_ingest(probe)
            self.lake.poll()
            landed = landed_total(probe)
            in_lake = float(dict(self.lake.rows).get("readings", 0))
            if in_lake >= landed or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        self.record.info.drain = {
            "landed": landed,
            "in_lake": in_lake,
            "waited_s": round(time.monotonic() - started, 1),
        }

    def _collect_markers(self) -> None:
        if self.markers is None:
            return
        seen = dict(self.lake.markers)
        markers = []
        for marker in self.markers.markers:
            wall = seen.get(marker.seq)
            # The watcher notes wall-clock times; the record is in seconds since t0.
            marker.visible_at = None if wall is None else round(wall - self._wall0, 3)
            markers.append(marker)
        self.record.markers = markers

    def _check_alive(self) -> None:
        for process in self.processes:
            if not process.alive() and process.name not in LOAD_PROCESSES:
                raise ComponentUnavailable(
                    f"{process.name} exited; log {process.log_path}:\n{process.log_tail(2000)}"
                )

    def _note_dead(self, t: float) -> None:
        for process in self.processes:
            if not process.alive() and process.name not in self._dead_noted:
                self._dead_noted.add(process.name)
                code = process.proc.returncode if process.proc else None
                self.record.info.notes.append(
                    f"{process.name} exited (code {code}) at t={t:.0f}s; log {process.log_path}"
                )

    # -- sampling ------------------------------------------------------------------------

    def _sample(self) -> Sample:
        t = round(self.clock(), 2)
        sample = Sample(t=t)
        readings_batches = self._sample_ingest(sample)
        self._sample_others(sample, readings_batches)
        self.landing.poll()
        sample.landing_bytes = float(self.landing.landing_bytes)
        sample.devices_online = {
            MQTT: len(self.landing.reporting.get(SOURCE_NAMES[MQTT], ())),
            MODBUS: len(self.landing.reporting.get(SOURCE_NAMES[MODBUS], ())),
            GB28181: len(self.landing.online.get(SOURCE_NAMES[GB28181], ())),
        }
        rows = dict(self.lake.rows)
        sample.lake_rows = float(rows.get("readings", 0))
        sample.lake_tables = {k: float(v) for k, v in rows.items()}
        sample.processes, sample.machine_cpu_percent, sample.steal_percent = self.sampler.sample()
        sample.mem_available_mb = round(mem_available_mb())
        self._sample_box(sample)
        self._note_dead(t)
        self._collect_markers()
        return sample

    def _sample_box(self, sample: Sample) -> None:
        """The box's counters, and which process trees are in it (their root pids)."""
        if self.box is None:
            return
        now = time.monotonic()
        reading = self.box.read()
        previous, at = self._box_last if self._box_last else (None, now)
        sample.box = reading.figures(previous, now - at)
        sample.box_members = members(reading.pids, self.sampler.roots)
        self._box_last = (reading, now)

    def _sample_ingest(self, sample: Sample) -> float:
        """Each ingest process's /metrics into the sample; returns the readings
        batches landed (each one offered to the live feed)."""
        counters, gauges = sample.counters, sample.gauges
        readings_batches = 0.0
        for protocol, port in self.ingest_ports.items():
            metrics = self._scrape(f"ingest-{protocol}", port)
            readings = total(metrics, "citylake_ingest_landed_rows_total", table="readings")
            events = total(metrics, "citylake_ingest_landed_rows_total", table="device_events")
            if protocol != GB28181:
                sample.landed_rows[protocol] = readings
            if events or protocol == GB28181:
                sample.landed_events[protocol] = events
            sample.event_lag_s.update(by_label(metrics, "citylake_ingest_lag_seconds", "source"))
            sample.freshest_lag_s.update(by_label(metrics, "citylake_ingest_freshest_lag_seconds", "source"))
            counters[f"{protocol}: rejected inputs"] = total(metrics, "citylake_ingest_rejected_total")
            counters[f"{protocol}: landing write errors"] = total(
                metrics, "citylake_ingest_flush_errors_total"
            )
            gauges[f"{protocol}: buffered rows"] = total(metrics, "citylake_ingest_buffered_rows")
            readings_batches += total(metrics, "citylake_ingest_batches_total", table="readings")
            if protocol == MODBUS:
                counters["modbus: failed polls"] = total(
                    metrics, "citylake_ingest_polls_total", outcome="error"
                )
                counters["modbus: skipped polls"] = total(metrics, "citylake_ingest_polls_skipped_total")
        return readings_batches

    def _scrape(self, name: str, port: int) -> Metrics:
        """A process's /metrics; the last good answer when it does not answer
        in time (a busy machine), counted, so counters never read as 0."""
        metrics = scrape(f"http://127.0.0.1:{port}/metrics", self._http)
        if metrics:
            self._last_metrics[name] = metrics
            return metrics
        self._scrapes_failed += 1
        return self._last_metrics.get(name, {})

    def _sample_others(self, sample: Sample, readings_batches: float) -> None:
        """The query service, the simulators and the load generators."""
        counters, gauges = sample.counters, sample.gauges
        query = self._scrape("query", self.query_port)
        merged = total(query, "citylake_hot_batches_total")
        counters["query: live batches dropped"] = total(query, "citylake_hot_dropped_batches_total")
        gauges["live feed: batches landed, not yet in the hot tier"] = max(0.0, readings_batches - merged)
        fleet = read_status(self.workdir / "fleet.json")
        if fleet:
            counters["mqtt fleet: disconnects"] = float(fleet.get("disconnects", 0))
            gauges["mqtt fleet: unacknowledged"] = float(fleet.get("pending", 0))
            gauges["mqtt fleet: behind schedule"] = float(fleet.get("behind", 0))
            gauges["mqtt fleet: published"] = float(fleet.get("published", 0))
        if self.sipp is not None:
            stats = read_stats(self.sipp.stats_path)
            counters["gb28181: SIPp failed calls"] = _float(stats.get("FailedCall(C)"))
            counters["gb28181: SIPp retransmissions"] = _float(stats.get("Retransmissions(C)"))
            gauges["gb28181: SIPp calls up"] = _float(stats.get("CurrentCall"))
        load = read_status(self.workdir / "queries.json")
        if load:
            counters["queries: sent"] = float(load.get("sent", 0))
            counters["queries: answered"] = float(load.get("answered", 0))
            counters["queries: failed (no answer or 5xx)"] = float(load.get("failed", 0))
        if self.markers is not None:
            counters["markers: not acknowledged"] = float(self.markers.unacked)
        counters["sampler: /metrics scrapes unanswered in 5 s"] = float(self._scrapes_failed)
        gauges[FLINK_JVM_RSS] = self._flink_jvm_rss_mb()

    def _flink_jvm_rss_mb(self) -> float:
        """Resident memory of the Flink JVMs (the mini-clusters under the
        flink-* processes; their Python drivers not counted), by psutil."""
        total_bytes = 0
        for process in self.processes:
            if not process.name.startswith("flink-"):
                continue
            try:
                children = psutil.Process(process.pid).children(recursive=True)
                total_bytes += sum(c.memory_info().rss for c in children if c.name() == "java")
            except psutil.Error:
                continue  # gone between the listing and the read: counted at the next sample
        return round(total_bytes / 2**20, 1)

    # -- stopping ------------------------------------------------------------------------

    def _stop_everything(self) -> None:
        self.status("stopping every process of the run")
        self._stop_queries()
        if self.markers is not None:
            self.markers.stop()
        self._lake_stop.set()
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop()
        self._http.close()
        # What is left of the run: any process ever in its trees, or any that
        # names its work directory (daprd's state file, a job's config).
        # A process of the run's trees may outlive its parent's stop (a JVM
        # started by PyFlink's gateway leaves when its pipe closes, slowly on a
        # loaded machine). The run ends what it started: give them 2 s, then
        # SIGKILL what is left of its trees and wait for /proc to agree. Only
        # what survives that is "left running".
        deadline = time.monotonic() + 2.0
        killed = self.sampler.still_running()
        while killed and time.monotonic() < deadline:
            time.sleep(0.25)
            killed = self.sampler.still_running()
        for entry in killed:
            with contextlib.suppress(ProcessLookupError, ValueError, PermissionError):
                os.kill(int(entry.split()[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        left = self.sampler.still_running()
        while left and time.monotonic() < deadline:
            time.sleep(0.25)
            left = self.sampler.still_running()
        named = processes_mentioning(str(self.workdir), exclude=ancestors())
        self.record.info.stop_check = {
            "checked": len(self.sampler.seen),
            "left_running": sorted(set(left) | set(named)),
            "killed": killed,
        }


def ancestors() -> list[int]:
    """This process's parents up to init: the shell or make that started the run."""
    found = []
    pid = os.getppid()
    while pid > 1:
        found.append(pid)
        info = read_proc(pid)
        if info is None:
            break
        pid = info.ppid
    return found


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _float(value: str | None) -> float:
    try:
        return float(value) if value else 0.0
    except ValueError:
        return 0.0


def _plain(value: Any) -> Any:
    """ruamel's commented maps and sequences as plain dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
