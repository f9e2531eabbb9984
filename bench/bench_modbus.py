"""Modbus polling at scale: N devices (default 1,000) polled at 1 Hz by ONE
citylake ingest process (the real IngestRunner with the real ModbusSource,
landing Parquet as usual), against pymodbus servers started by
``citylake simulate modbus`` in another process, so this process only polls.

Baseline, same run, same servers: bare pymodbus ``AsyncModbusTcpClient`` reads
of the same registers (the same requests per device as citylake's plan, one
client per endpoint as citylake shares them), each device on the same fixed
1 Hz grid with the same start offsets, on one event loop in this process.

Poll lateness is what the runner observes into its ``poll_lateness`` histogram
(actual minus scheduled start), recorded value by value; CPU is this process's
``time.process_time()`` (all threads, landing writes included) over the window.

    .venv/bin/python bench/bench_modbus.py [--devices N] [--seconds S] [--per-endpoint K]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from pymodbus.client import AsyncModbusTcpClient

from citylake.config import load_config
from citylake.ingest.metrics import IngestMetrics
from citylake.ingest.modbus.adapter import ModbusSource
from citylake.ingest.modbus.codec import ModbusRequest
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import IngestRunner
from citylake.schemas import DataLayout
from citylake_devstack.modbus_sim import start_modbus_simulator
from citylake_devstack.scalereport.summary import quantile  # the one percentile of every figure

WARM_UP_S = 3.0
INTERVAL_S = 1.0


@dataclass
class Window:
    """What one contender did during the measured window."""

    name: str
    seconds: float = 0.0
    lateness: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    polls: int = 0
    skipped: int = 0
    requests: int = 0
    bad_requests: int = 0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    machine_busy: float = 0.0
    rss_mb: float = 0.0

    def cpu_per_poll_us(self) -> float:
        return self.cpu_s / max(1, self.polls) * 1e6


class Switch:
    on = False


class _Recorder:
    """Stands in for one histogram of the runner's metrics: keeps every value
    observed while ``switch.on`` and passes each on to the real histogram."""

    def __init__(self, histogram: Any, values: list[float], switch: Switch) -> None:
        self._histogram = histogram
        self._values = values
        self._switch = switch

    def labels(self, *names: str) -> _Recorder:
        return _Recorder(self._histogram.labels(*names), self._values, self._switch)

    def observe(self, value: float) -> None:
        if self._switch.on:
            self._values.append(value)
        self._histogram.observe(value)


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def process_cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def machine_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of all CPUs since boot."""
    t = psutil.cpu_times()
    total = float(sum(t))
    return total - t.idle - t.iowait, total


class Meter:
    """CPU of this process and the server's, and how busy the machine was."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def __enter__(self) -> Meter:
        self._started = time.perf_counter()
        self._cpu = time.process_time()
        self._server = process_cpu_s(self.server_pid)
        self._machine = machine_times()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self.cpu_s = time.process_time() - self._cpu
        self.server_cpu_s = process_cpu_s(self.server_pid) - self._server
        busy, total = machine_times()
        self.machine_busy = (busy - self._machine[0]) / max(1e-9, total - self._machine[1])

    def fill(self, window: Window) -> None:
        window.seconds, window.cpu_s, window.server_cpu_s = self.seconds, self.cpu_s, self.server_cpu_s
        window.machine_busy = self.machine_busy
        window.rss_mb = rss_mb()


def counter(metric: Any) -> float:
    return float(sum(s.value for m in metric.collect() for s in m.samples if s.name.endswith("_total")))


async def measure_citylake(config_path: Path, seconds: float, server_pid: int) -> Window:
    loaded = load_config(config_path)  # data_dir: the bench's temporary directory
    sources = build_sources(loaded)
    window = Window("citylake")
    metrics = IngestMetrics()
    recording = Switch()
    metrics.poll_lateness = _Recorder(metrics.poll_lateness, window.lateness, recording)  # type: ignore[assignment]
    metrics.poll_seconds = _Recorder(metrics.poll_seconds, window.durations, recording)  # type: ignore[assignment]
    runner = IngestRunner(sources, DataLayout(loaded.config.data_dir), loaded.config.site, metrics=metrics)
    [source] = sources
    assert isinstance(source, ModbusSource)

    def totals() -> tuple[float, float, float, float, float]:
        polls = metrics.polls
        return (
            polls.labels(source.name, "ok")._value.get(),
            polls.labels(source.name, "error")._value.get(),
            counter(metrics.polls_skipped),
            float(sum(c.requests_sent for c in source.connections.values())),
            counter(metrics.rejected),
        )

    await runner.start()
    await asyncio.sleep(WARM_UP_S)
    before = totals()
    recording.on = True
    with Meter(server_pid) as meter:
        await asyncio.sleep(seconds)
    recording.on = False
    after = totals()
    meter.fill(window)
    await runner.stop()
    ok, error, skipped, requests, rejected = (a - b for a, b in zip(after, before, strict=True))
    window.polls, window.skipped = int(ok + error), int(skipped)
    window.requests, window.bad_requests = int(requests), int(rejected)
    return window


@dataclass(frozen=True)
class BareDevice:
    slave_id: int
    url: str
    requests: tuple[ModbusRequest, ...]


READ_METHODS = {
    "holding": "read_holding_registers",
    "input": "read_input_registers",
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
}


class BarePolling:
    """What one would write with pymodbus alone: a client per endpoint, a task
    per device on a fixed grid, the same reads, nothing done with the answers."""

    def __init__(self, devices: list[BareDevice]) -> None:
        self.devices = devices
        self.window = Window("bare pymodbus")
        self.recording = False
        self.clients: dict[str, AsyncModbusTcpClient] = {}

    async def poll(self, d: BareDevice, client: AsyncModbusTcpClient) -> None:
        started = time.perf_counter()
        for r in d.requests:
            read: Callable[..., Any] = getattr(client, READ_METHODS[r.register_type])
            try:
                response = await read(r.address, count=r.count, device_id=d.slave_id)
                bad = response.isError()
            except Exception:
                bad = True
            if self.recording:
                self.window.requests += 1
                self.window.bad_requests += bad
        if self.recording:
            self.window.polls += 1
            self.window.durations.append(time.perf_counter() - started)

    async def schedule(self, d: BareDevice, offset: float) -> None:
        """The runner's grid: fixed ticks, skip while the last poll runs, no bursts."""
        client = self.clients[d.url]
        start = time.monotonic() + offset
        tick = 0
        running: asyncio.Task[None] | None = None
        while True:
            scheduled = start + tick * INTERVAL_S
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tick += 1
            if running is not None and not running.done():
                self.window.skipped += self.recording
                continue
            if self.recording:
                self.window.lateness.append(max(0.0, time.monotonic() - scheduled))
            running = asyncio.create_task(self.poll(d, client))
            behind = int((time.monotonic() - start) / INTERVAL_S) - tick
            if behind > 0:
                self.window.skipped += behind * self.recording
                tick += behind

    async def measure(self, seconds: float, server_pid: int) -> Window:
        for d in self.devices:  # pymodbus clients belong to the running loop
            if d.url not in self.clients:
                host, port = d.url.removeprefix("tcp://").rsplit(":", 1)
                self.clients[d.url] = AsyncModbusTcpClient(host, port=int(port), timeout=2, retries=0)
        for client in self.clients.values():
            await client.connect()
        count = len(self.devices)
        tasks = [
            asyncio.create_task(self.schedule(d, INTERVAL_S * i / count)) for i, d in enumerate(self.devices)
        ]
        await asyncio.sleep(WARM_UP_S)
        self.recording = True
        with Meter(server_pid) as meter:
            await asyncio.sleep(seconds)
        self.recording = False
        meter.fill(self.window)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.2)  # polls in flight finish
        for client in self.clients.values():
            client.close()
        return self.window


def bare_devices(config_path: Path) -> list[BareDevice]:
    """The same devices, endpoints and request plans citylake uses."""
    [source] = build_sources(load_config(config_path))
    assert isinstance(source, ModbusSource)
    return [
        BareDevice(p.device.slave_id, p.connection.endpoint.key, p.plan.requests) for p in source.targets()
    ]


def report(windows: dict[str, Window], devices: int, endpoints: int, plan: int) -> None:
    shown = [windows[k] for k in ("citylake", "bare") if k in windows]
    print(
        f"devices {devices} at {1 / INTERVAL_S:g} Hz, {endpoints} endpoints, {plan} requests per poll; "
        f"window {shown[0].seconds:.1f}s after {WARM_UP_S:g}s warm-up"
    )
    header = f"{'':16}{'polls/s':>9}{'skipped':>9}{'bad req':>9}{'late p50':>10}{'p99':>9}{'max':>9}"
    print(header + f"{'poll p99':>10}{'CPU/poll':>10}{'RSS':>8}{'server CPU':>12}{'machine':>9}")
    for w in shown:
        ms = [quantile(w.lateness, q) * 1000 for q in (0.5, 0.99)] + [max(w.lateness, default=0) * 1000]
        print(
            f"{w.name:16}{w.polls / w.seconds:9.1f}{w.skipped:9d}{w.bad_requests:9d}"
            f"{ms[0]:8.1f}ms{ms[1]:7.1f}ms{ms[2]:7.1f}ms{quantile(w.durations, 0.99) * 1000:8.1f}ms"
            f"{w.cpu_per_poll_us():8.0f}us{w.rss_mb:6.0f}MB{w.server_cpu_s / w.seconds * 100:11.0f}%"
            f"{w.machine_busy * 100:8.0f}%"
        )
    print(
        "(late: actual minus scheduled poll start; poll p99: one poll's duration, endpoint queue included;\n"
        " CPU/poll: this process, all threads; server CPU: the simulator process, % of one core;\n"
        " machine: all cores busy; the baseline ran first: its RSS is this process without citylake running)"
    )
    for w in shown:
        print(f"requests in window, {w.name:16}{w.requests:8d}")
    if len(shown) == 2:
        ratio = windows["citylake"].cpu_per_poll_us() / windows["bare"].cpu_per_poll_us()
        print(f"ratio CPU per poll citylake / bare pymodbus   {ratio:.2f}")
    if "citylake" in windows:
        met = quantile(windows["citylake"].lateness, 0.99) <= 0.100
        print(f"goal citylake p99 lateness <= 100 ms           {'met' if met else 'MISSED'}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process                      {peak:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--per-endpoint", type=int, default=50)
    parser.add_argument("--only", choices=["citylake", "bare"], help="run one side (for profiling)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server, config = start_modbus_simulator(
            workdir, args.devices, args.per_endpoint, step_s=1.0, interval_s=INTERVAL_S
        )
        try:
            devices = bare_devices(config)
            # The baseline first: its RSS is then the process without citylake running.
            windows: dict[str, Window] = {}
            if args.only != "citylake":
                gc.collect()
                windows["bare"] = asyncio.run(BarePolling(devices).measure(args.seconds, server.pid))
            if args.only != "bare":
                gc.collect()
                windows["citylake"] = asyncio.run(measure_citylake(config, args.seconds, server.pid))
        finally:
            server.stop()
    endpoints = len({d.url for d in devices})
    report(windows, args.devices, endpoints, len(devices[0].requests))


if __name__ == "__main__":
    main()
