"""Simulated Modbus devices at scale, played by pymodbus's own server.

``citylake simulate modbus`` and the Modbus benchmark use this: N devices of
one register-map profile (``ingest/profiles/<name>.yaml``), K slave ids per TCP
endpoint (a gateway), every endpoint a pymodbus ``ModbusTcpServer`` on its own
port on 127.0.0.1. All endpoints of one process share its event loop; with
``processes > 1`` the endpoints are split over that many child processes.

Every device serves values derived from its ``device_id`` and the current time
step (``floor(time / step_s)``; ``step_s=0`` keeps them fixed), so a test knows
exactly what a poll must land: ``expected_values(device_id, fields, step)``.
The registers are refreshed lazily, by pymodbus's per-device ``action`` hook,
the first time a block is read in a new step.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import signal
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from citylake.ingest.modbus.codec import BIT_TYPES, decode_field, scaled, width_of
from citylake.ingest.modbus.fields import RegisterField
from citylake.ingest.modbus.profiles import load_profile
from citylake_devstack.process import CITYLAKE, ComponentUnavailable, ManagedProcess

MAX_SLAVES_PER_ENDPOINT = 247  # unit ids 1..247 (Modbus serial line addressing)
SOURCE_NAME = "sim-modbus"
# Block of a function code: coils, discrete inputs, holding and input registers.
_BLOCK_OF_FC = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h", 4: "i"}
_BLOCK_OF_TYPE = {"coil": "c", "discrete": "d", "holding": "h", "input": "i"}
_STRUCT = {
    "INT16": ">h", "UINT16": ">H", "INT32": ">i", "UINT32": ">I",
    "INT64": ">q", "UINT64": ">Q", "FLOAT32": ">f", "FLOAT64": ">d",
}  # fmt: skip
# Raw integers stay within +-span/2 (signed) or 0..span: moderate magnitudes,
# and exact in readings.value (float64) for every type.
_SPAN = {"INT16": 20_000, "UINT16": 10_000, "INT32": 2_000_000, "UINT32": 1_000_000}


# -- values -------------------------------------------------------------------


def _seed(device_id: str, name: str) -> int:
    return zlib.crc32(f"{device_id}\0{name}".encode())


def raw_value(device_id: str, field: RegisterField, step: int) -> int | float | bool | str:
    """What the device holds for ``field`` at time step ``step``, before scale
    and offset: a deterministic function of the device, the field and the step."""
    h = _seed(device_id, field.name)
    if field.data_type == "STRING":
        return f"SIM{h % 100_000:05d}"[: 2 * width_of(field)]
    if field.data_type == "BIT":
        return bool(((h >> 4) + step // (1 + h % 4)) & 1)
    k = h + step * (1 + h % 13)
    if field.data_type in ("FLOAT32", "FLOAT64"):
        return (k % 80_000) / 8  # multiples of 1/8 below 10000: exact in float32
    span = _SPAN.get(field.data_type, 1_000_000_000)
    signed = field.data_type.startswith("INT")
    return k % span - (span // 2 if signed else 0)


def landed_value(field: RegisterField, raw: int | float | bool | str) -> float | str:
    """What ``readings`` holds for a raw value: scaled numbers, 1.0/0.0 bits, text."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    return scaled(raw, field.scale, field.offset)


def _words(data_type: str, byte_order: str, raw: int | float) -> list[int]:
    """Registers holding ``raw``: the inverse of ``codec.registers_to_bytes``."""
    data = struct.pack(_STRUCT[data_type], raw)
    swap_bytes = byte_order in ("DCBA", "BADC")
    swap_words = byte_order in ("DCBA", "CDAB")
    words = [
        (data[i + 1] << 8 | data[i]) if swap_bytes else (data[i] << 8 | data[i + 1])
        for i in range(0, len(data), 2)
    ]
    return words[::-1] if swap_words else words


def _string_words(text: str, length: int, byte_order: str) -> list[int]:
    data = text.encode("ascii").ljust(2 * length, b"\0")
    swap = byte_order in ("DCBA", "BADC")
    return [
        (data[i + 1] << 8 | data[i]) if swap else (data[i] << 8 | data[i + 1]) for i in range(0, len(data), 2)
    ]


@dataclass(frozen=True)
class DeviceImage:
    """Everything one device serves in one step: 0-based registers and bits per
    block, and the value each field decodes to."""

    words: dict[str, list[int]]  # "h", "i"
    bits: dict[str, list[bool]]  # "c", "d"
    values: dict[str, float | str]


def block_sizes(fields: Sequence[RegisterField]) -> dict[str, int]:
    """Addresses 0..last used of each block (at least 1), all readable."""
    sizes = dict.fromkeys("cdhi", 1)
    for f in fields:
        block = _BLOCK_OF_TYPE[f.register_type]
        sizes[block] = max(sizes[block], f.address + f.width)
    return sizes


def device_image(device_id: str, fields: Sequence[RegisterField], step: int) -> DeviceImage:
    """Lay every field's generated value into the registers. A field whose
    registers another field already filled (a register read as two types)
    decodes to whatever is there; bits of one status word are set one by one."""
    sizes = block_sizes(fields)
    words = {b: [0] * sizes[b] for b in "hi"}
    bits = {b: [False] * sizes[b] for b in "cd"}
    owned: dict[str, set[int]] = {b: set() for b in "cdhi"}
    values: dict[str, float | str] = {}
    later: list[RegisterField] = []
    # Whole registers first, then bits within registers, then the read-backs.
    ordered = sorted(fields, key=lambda f: f.data_type == "BIT" and f.register_type not in BIT_TYPES)
    for f in ordered:
        block = _BLOCK_OF_TYPE[f.register_type]
        span = set(range(f.address, f.address + f.width))
        raw = raw_value(device_id, f, step)
        if f.register_type in BIT_TYPES:
            if span & owned[block]:
                later.append(f)
                continue
            bits[block][f.address] = bool(raw)
        elif f.data_type == "BIT":
            if span & owned[block]:  # a bit of a register holding a number
                later.append(f)
                continue
            mask = 1 << (f.bit or 0)
            word = words[block][f.address]
            words[block][f.address] = (word | mask) if raw else (word & ~mask)
            values[f.name] = landed_value(f, raw)
            continue  # other bits of the same word stay free
        else:
            if span & owned[block]:
                later.append(f)
                continue
            if isinstance(raw, str):
                new = _string_words(raw, f.width, f.byte_order)
            else:
                new = _words(f.data_type, f.byte_order, float(raw) if "FLOAT" in f.data_type else int(raw))
            words[block][f.address : f.address + f.width] = new
        owned[block] |= span
        values[f.name] = landed_value(f, raw)
    for f in later:
        block = _BLOCK_OF_TYPE[f.register_type]
        end = f.address + f.width
        if f.register_type in BIT_TYPES:
            decoded = decode_field(f, bits=bits[block][f.address : end])
        else:
            decoded = decode_field(f, words=words[block][f.address : end])
        number = decoded.number
        values[f.name] = (
            decoded.text if decoded.text is not None else (math.nan if number is None else number)
        )
    return DeviceImage(words, bits, values)


def expected_values(device_id: str, fields: Sequence[RegisterField], step: int) -> dict[str, float | str]:
    """What a poll of ``device_id`` in time step ``step`` lands, metric -> value or text."""
    return device_image(device_id, fields, step).values


def time_step(step_s: float, now: float | None = None) -> int:
    """The step the devices are in at wall-clock ``now``; 0 forever if ``step_s`` is 0."""
    if step_s <= 0:
        return 0
    return int((time.time() if now is None else now) // step_s)


# -- devices and endpoints ----------------------------------------------------


@dataclass(frozen=True)
class SimulatedDevice:
    device_id: str
    slave_id: int
    endpoint: int  # index into the endpoint list


def plan_devices(count: int, per_endpoint: int, prefix: str) -> list[SimulatedDevice]:
    """Device ``i`` is slave ``i % K + 1`` on endpoint ``i // K``."""
    if not 1 <= per_endpoint <= MAX_SLAVES_PER_ENDPOINT:
        raise ValueError(f"per_endpoint must be 1..{MAX_SLAVES_PER_ENDPOINT}, got {per_endpoint}")
    if count < 1:
        raise ValueError(f"devices must be at least 1, got {count}")
    return [
        SimulatedDevice(f"{prefix}-{i:05d}", i % per_endpoint + 1, i // per_endpoint) for i in range(count)
    ]


class _LiveDevice:
    """One slave on a server: refreshes its registers when the step changes."""

    def __init__(self, device: SimulatedDevice, fields: Sequence[RegisterField], step_s: float) -> None:
        self.device = device
        self.fields = tuple(fields)
        self.step_s = step_s
        self._step: int | None = None
        self._image: DeviceImage | None = None
        self._block_step: dict[str, int] = {}

    def image(self, step: int) -> DeviceImage:
        if self._image is None or self._step != step:
            self._image = device_image(self.device.device_id, self.fields, step)
            self._step = step
        return self._image

    def sim_device(self) -> SimDevice:
        image = self.image(time_step(self.step_s))
        self._block_step = dict.fromkeys("cdhi", self._step or 0)

        def registers(block: str) -> list[SimData]:
            return [SimData(0, values=list(image.words[block]), datatype=DataType.REGISTERS)]

        def coils(block: str) -> list[SimData]:
            return [SimData(0, values=list(image.bits[block]), datatype=DataType.BITS)]

        return SimDevice(
            self.device.slave_id,
            simdata=(coils("c"), coils("d"), registers("h"), registers("i")),
            action=self.action,
        )

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> None:
        """pymodbus calls this before it reads ``registers`` (the block in use)."""
        block = _BLOCK_OF_FC.get(function_code)
        if block is None:
            return
        step = time_step(self.step_s)
        if self._block_step.get(block) == step:
            return
        image = self.image(step)
        if block in ("h", "i"):
            fresh = image.words[block]
        else:  # bits are packed 16 to a register, bit 0 first
            padded = image.bits[block] + [False] * (-len(image.bits[block]) % 16)
            fresh = [
                sum(1 << i for i, b in enumerate(padded[r : r + 16]) if b) for r in range(0, len(padded), 16)
            ]
        registers[: len(fresh)] = fresh
        self._block_step[block] = step


@dataclass(frozen=True)
class EndpointSpec:
    """One TCP server: its port (0 = any free one) and the slaves behind it."""

    port: int
    devices: tuple[SimulatedDevice, ...]


async def start_endpoints(
    specs: Sequence[EndpointSpec], fields: Sequence[RegisterField], step_s: float
) -> tuple[list[ModbusTcpServer], list[int]]:
    """Start one pymodbus TCP server per spec on this loop; returns them and their ports."""
    servers: list[ModbusTcpServer] = []
    ports: list[int] = []
    try:
        for spec in specs:
            devices = [_LiveDevice(d, fields, step_s).sim_device() for d in spec.devices]
            server = ModbusTcpServer(devices, address=("127.0.0.1", spec.port))
            try:
                await server.serve_forever(background=True)
            except RuntimeError:
                raise ComponentUnavailable(
                    f"modbus simulator: cannot listen on 127.0.0.1:{spec.port} (port in use?)"
                ) from None
            servers.append(server)
            sockets = getattr(server.transport, "sockets", None) or []
            ports.append(int(sockets[0].getsockname()[1]) if sockets else spec.port)
    except BaseException:
        await stop_endpoints(servers)
        raise
    return servers, ports


async def stop_endpoints(servers: Sequence[ModbusTcpServer]) -> None:
    for server in servers:
        with contextlib.suppress(Exception):
            await server.shutdown()  # type: ignore[no-untyped-call]


# -- the simulator --------------------------------------------------------------


@dataclass(frozen=True)
class Simulation:
    """What is being served: ``urls[e]`` is endpoint ``e``."""

    profile: str
    devices: tuple[SimulatedDevice, ...]
    urls: tuple[str, ...]
    step_s: float
    processes: int

    def device_url(self, device: SimulatedDevice) -> str:
        return self.urls[device.endpoint]


def _serve_in_child(
    specs: Sequence[EndpointSpec], profile: str, step_s: float, conn: Connection
) -> None:  # pragma: no cover - runs in a spawned process
    # Ctrl-C reaches the whole process group; the parent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fields = load_profile(profile).fields

    async def main() -> None:
        try:
            servers, ports = await start_endpoints(specs, fields, step_s)
        except Exception as exc:
            conn.send(("error", str(exc)))
            return
        conn.send(("ports", ports))
        try:
            # Until the parent says stop or dies (its end of the pipe closes).
            await asyncio.to_thread(_until_closed, conn)
        finally:
            await stop_endpoints(servers)

    asyncio.run(main())


def _until_closed(conn: Connection) -> None:  # pragma: no cover - runs in a spawned process
    with contextlib.suppress(EOFError, OSError):
        conn.recv()


def run_simulation(
    devices: int,
    per_endpoint: int = 50,
    base_port: int = 0,
    profile: str = "pump-station",
    step_s: float = 1.0,
    processes: int = 1,
    duration_s: float | None = None,
    on_ready: Callable[[Simulation], None] = lambda _: None,
    stop: asyncio.Event | None = None,
) -> Simulation:
    """Serve ``devices`` devices until ``duration_s`` passes, ``stop`` is set or
    SIGINT/SIGTERM arrives. Endpoint ``e`` listens on ``base_port + e`` (any free
    port if ``base_port`` is 0). ``on_ready`` runs once every endpoint listens."""
    fields = load_profile(profile).fields  # fails early, naming the file
    planned = plan_devices(devices, per_endpoint, profile)
    endpoints = planned[-1].endpoint + 1
    specs = [
        EndpointSpec(base_port + e if base_port else 0, tuple(d for d in planned if d.endpoint == e))
        for e in range(endpoints)
    ]
    processes = max(1, min(processes, endpoints))
    return asyncio.run(_run(specs, planned, fields, profile, step_s, processes, duration_s, on_ready, stop))


async def _run(
    specs: list[EndpointSpec],
    planned: list[SimulatedDevice],
    fields: Sequence[RegisterField],
    profile: str,
    step_s: float,
    processes: int,
    duration_s: float | None,
    on_ready: Callable[[Simulation], None],
    stop: asyncio.Event | None,
) -> Simulation:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    servers: list[ModbusTcpServer] = []
    children = _Children([], [])
    try:
        if processes == 1:
            servers, ports = await start_endpoints(specs, fields, step_s)
        else:
            ports, children = await asyncio.to_thread(_start_children, specs, profile, step_s, processes)
        simulation = Simulation(
            profile, tuple(planned), tuple(f"tcp://127.0.0.1:{p}" for p in ports), step_s, processes
        )
        on_ready(simulation)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
        return simulation
    finally:
        await stop_endpoints(servers)
        await asyncio.to_thread(children.stop)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


@dataclass
class _Children:
    """Server processes and the parent's end of a pipe to each: closing it (or
    the parent dying) tells the child to stop."""

    processes: list[Any]
    pipes: list[Connection]

    def stop(self) -> None:
        for pipe in self.pipes:
            pipe.close()
        for child in self.processes:
            child.join(5)
            if child.is_alive():
                child.terminate()
                child.join(5)


def _start_children(
    specs: list[EndpointSpec], profile: str, step_s: float, processes: int
) -> tuple[list[int], _Children]:
    context = multiprocessing.get_context("spawn")
    shares = [list(range(len(specs)))[i::processes] for i in range(processes)]
    children = _Children([], [])
    try:
        for share in shares:
            ours, theirs = context.Pipe()
            child = context.Process(
                target=_serve_in_child, args=([specs[i] for i in share], profile, step_s, theirs), daemon=True
            )
            child.start()
            theirs.close()  # only the child holds its end now
            children.processes.append(child)
            children.pipes.append(ours)
        ports = [0] * len(specs)
        for number, (share, pipe) in enumerate(zip(shares, children.pipes, strict=True)):
            try:
                if not pipe.poll(60):
                    raise ComponentUnavailable(f"modbus simulator process {number} did not listen within 60s")
                kind, payload = pipe.recv()
            except EOFError:
                raise ComponentUnavailable(
                    f"modbus simulator process {number} exited before it listened"
                ) from None
            if kind == "error":
                raise ComponentUnavailable(f"modbus simulator process {number}: {payload}")
            for index, port in zip(share, payload, strict=True):
                ports[index] = port
        return ports, children
    except BaseException:
        children.stop()
        raise


# -- city.yaml ------------------------------------------------------------------


def source_config(
    simulation: Simulation,
    name: str = SOURCE_NAME,
    interval_s: float = 1.0,
    timeout_s: float = 2.0,
) -> dict[str, Any]:
    """A ``type: modbus`` source listing every simulated device."""
    devices = []
    for d in simulation.devices:
        entry = CommentedMap(
            device_id=d.device_id,
            slave_id=d.slave_id,
            url=simulation.device_url(d),
            profile=simulation.profile,
        )
        entry.fa.set_flow_style()
        devices.append(entry)
    return CommentedMap(
        name=name,
        type="modbus",
        url=simulation.urls[0],
        interval_s=interval_s,
        timeout_s=timeout_s,
        devices=CommentedSeq(devices),
    )


def write_city_config(
    path: Path,
    simulation: Simulation,
    site: str = "sim-site",
    data_dir: str = "./var",
    name: str = SOURCE_NAME,
    interval_s: float = 1.0,
    timeout_s: float = 2.0,
) -> Path:
    """A whole city.yaml for ``citylake ingest --config``, written atomically (a
    reader that sees the file sees all of it: the servers already listen)."""
    document = CommentedMap(
        site=site, data_dir=data_dir, sources=[source_config(simulation, name, interval_s, timeout_s)]
    )
    document.yaml_set_start_comment(
        f"Written by `citylake simulate modbus`: {len(simulation.devices)} {simulation.profile} devices on "
        f"{len(simulation.urls)} endpoints\n(pymodbus servers); values change every "
        f"{simulation.step_s:g}s (0 = never)."
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    yaml = YAML()
    yaml.width = 200
    with partial.open("w", encoding="utf-8") as out:
        yaml.dump(document, out)
    partial.replace(path)
    return path


def start_modbus_simulator(
    workdir: Path,
    devices: int,
    per_endpoint: int = 50,
    profile: str = "pump-station",
    step_s: float = 1.0,
    processes: int = 1,
    interval_s: float = 1.0,
    extra: Sequence[str] = (),
    timeout_s: float = 120.0,
) -> tuple[ManagedProcess, Path]:
    """``citylake simulate modbus`` as its own process; returns it and the
    city.yaml it wrote once every endpoint listened."""
    config = workdir / "modbus-sim.city.yaml"
    config.unlink(missing_ok=True)
    argv = [
        *CITYLAKE, "simulate", "modbus", "--devices", str(devices),
        "--per-endpoint", str(per_endpoint), "--profile", profile, "--change-every", str(step_s),
        "--processes", str(processes), "--interval", str(interval_s),
        "--data-dir", str(workdir / "data"), "--write-config", str(config), *extra,
    ]  # fmt: skip
    process = ManagedProcess("modbus-simulator", argv, workdir / "modbus-simulator.log").start()
    try:
        process.wait_until(config.exists, timeout_s, f"config {config}")
    except ComponentUnavailable:
        process.stop()
        raise
    return process, config
