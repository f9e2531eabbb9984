"""A Modbus device played by pymodbus's own server, run as its own process:
``python -m citylake_devstack.modbus_device --port P --holding 0=100,1=200``.

Beyond one slave with holding and input registers it plays what the Modbus
adapter meets in the field: coils and discrete inputs, several slave ids behind
one endpoint (``--devices`` JSON, a gateway), RTU framing over TCP
(``--framer rtu``), a serial line (``--serial /dev/pts/N``), slaves that do not
answer (``--unknown-ids silent``) and a device that never answers at all
(``--silent``). Every request it receives is appended to a JSON-lines request
log, so tests count what a client really sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port, require_port_free

log = logging.getLogger("citylake_devstack.modbus_device")

BLOCK_SIZE = 10_000
READY_LINE = "modbus device ready"

Framer = Literal["socket", "rtu"]
UnknownIds = Literal["exception", "silent"]


@dataclass(frozen=True)
class DeviceRegisters:
    """What one slave id serves; addresses not listed read as 0 up to ``BLOCK_SIZE``."""

    holding: Mapping[int, int] = field(default_factory=dict)
    inputs: Mapping[int, int] = field(default_factory=dict)
    coils: Mapping[int, int] = field(default_factory=dict)
    discrete: Mapping[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, int]]:
        return {
            "holding": {str(a): v for a, v in self.holding.items()},
            "inputs": {str(a): v for a, v in self.inputs.items()},
            "coils": {str(a): v for a, v in self.coils.items()},
            "discrete": {str(a): v for a, v in self.discrete.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Mapping[str, int]]) -> DeviceRegisters:
        def table(key: str) -> dict[int, int]:
            return {int(a): int(v) for a, v in data.get(key, {}).items()}

        return cls(table("holding"), table("inputs"), table("coils"), table("discrete"))


def _parse(spec: str) -> dict[int, int]:
    values: dict[int, int] = {}
    for item in filter(None, spec.split(",")):
        address, value = item.split("=")
        values[int(address)] = int(value)
    return values


def _block(values: Mapping[int, int]) -> ModbusSequentialDataBlock:
    registers = [0] * BLOCK_SIZE
    for address, value in values.items():
        registers[address] = value
    # pymodbus keeps the Modbus "+1" convention: protocol address 0 is block address 1.
    return ModbusSequentialDataBlock(1, registers)  # type: ignore[no-untyped-call]


def _context(devices: Mapping[int, DeviceRegisters]) -> ModbusServerContext:
    contexts: dict[int, Any] = {
        slave: ModbusDeviceContext(
            hr=_block(regs.holding), ir=_block(regs.inputs), co=_block(regs.coils), di=_block(regs.discrete)
        )
        for slave, regs in devices.items()
    }
    return ModbusServerContext(devices=contexts, single=False)


class _SelectiveHandler(ServerRequestHandler):
    """Answers only the slave ids its server lists. pymodbus 3.16's own
    ``ignore_missing_devices`` does not work (an unknown id raises KeyError inside
    the datastore, answered as exception 4), so silence is done here."""

    async def handle_request(self) -> None:
        pdu = self.last_pdu
        if pdu is not None and pdu.dev_id not in self.server.answering_ids:
            return  # the client times out, as with a dead slave behind a gateway
        await super().handle_request()  # type: ignore[no-untyped-call]


class _TcpDevice(ModbusTcpServer):
    answering_ids: frozenset[int]

    def callback_new_connection(self) -> ServerRequestHandler:
        return _SelectiveHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


class _SerialDevice(ModbusSerialServer):
    answering_ids: frozenset[int]

    def callback_new_connection(self) -> ServerRequestHandler:
        return _SelectiveHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)  # type: ignore[no-untyped-call]


class RequestLog:
    """Appends one JSON line per request received (pymodbus's trace_pdu hook)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def __call__(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending and self.path is not None:
            entry = {
                "device_id": pdu.dev_id,
                "function_code": pdu.function_code,
                "address": getattr(pdu, "address", None),
                "count": getattr(pdu, "count", None),
            }
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")
        return pdu


async def serve(
    devices: Mapping[int, DeviceRegisters],
    *,
    port: int | None = None,
    serial: str | None = None,
    framer: Framer = "socket",
    unknown_ids: UnknownIds = "exception",
    silent: bool = False,
    request_log: Path | None = None,
) -> None:
    """Serve ``devices`` on 127.0.0.1:``port`` or on the serial device ``serial``."""
    context = _context(devices)
    trace = RequestLog(request_log)
    server: _TcpDevice | _SerialDevice
    if serial is not None:
        server = _SerialDevice(context, framer=FramerType.RTU, port=serial, baudrate=9600, trace_pdu=trace)
    else:
        server = _TcpDevice(
            context, framer=FramerType(framer), address=("127.0.0.1", port or 502), trace_pdu=trace
        )
    # Unknown ids get an exception response (or, if "silent", nothing); a silent
    # device answers no id at all.
    known = frozenset() if silent else frozenset(devices)
    server.answering_ids = known if unknown_ids == "silent" or silent else frozenset(range(256))
    await server.serve_forever(background=True)
    # The starter waits for this line: a serial server has no port to probe.
    log.info("%s (slaves %s)", READY_LINE, sorted(devices))
    await asyncio.Event().wait()


def request_log_path(workdir: Path, name: str | int) -> Path:
    """Where the device started as ``name`` (its port, or its serial link) logs requests."""
    return workdir / f"modbus-{name}.requests.jsonl"


def read_request_log(path: Path) -> list[dict[str, Any]]:
    """The requests a device received, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _argv(
    devices: Mapping[int, DeviceRegisters], framer: Framer, unknown_ids: UnknownIds, silent: bool, log: Path
) -> list[str]:
    argv = [
        sys.executable, "-m", "citylake_devstack.modbus_device",
        "--devices", json.dumps({str(k): v.to_json() for k, v in devices.items()}),
        "--framer", framer, "--unknown-ids", unknown_ids, "--request-log", str(log),
    ]  # fmt: skip
    return [*argv, "--silent"] if silent else argv


def start_modbus_device(
    workdir: Path,
    holding: dict[int, int],
    inputs: dict[int, int] | None = None,
    device_id: int = 1,
    *,
    coils: dict[int, int] | None = None,
    discrete: dict[int, int] | None = None,
    devices: Mapping[int, DeviceRegisters] | None = None,
    framer: Framer = "socket",
    unknown_ids: UnknownIds = "exception",
    silent: bool = False,
    port: int | None = None,
) -> tuple[ManagedProcess, int]:
    """A TCP device on ``port`` (a free one by default): slave ``device_id`` serves
    ``holding``/``inputs``/``coils``/``discrete``; ``devices`` adds more slaves.
    Its requests are logged at ``request_log_path(workdir, port)``."""
    if port is None:
        port = free_port()
    else:
        require_port_free(port, "modbus device")
    served = {
        device_id: DeviceRegisters(holding, inputs or {}, coils or {}, discrete or {}),
        **(devices or {}),
    }
    argv = [
        *_argv(served, framer, unknown_ids, silent, request_log_path(workdir, port)),
        "--port",
        str(port),
    ]
    process = ManagedProcess(f"modbus-device:{port}", argv, workdir / f"modbus-{port}.log").start()
    process.wait_port(port, 20)
    return process, port


def start_serial_modbus_device(
    workdir: Path, devices: Mapping[int, DeviceRegisters], unknown_ids: UnknownIds = "exception"
) -> tuple[ManagedProcess, ManagedProcess, Path]:
    """A serial RTU device on one end of a socat pty pair; returns (socat, device,
    the client's end of the line). Needs Debian ``socat`` and ``pyserial``."""
    line = workdir / "serial"
    line.mkdir(parents=True, exist_ok=True)
    device_end, client_end = line / "device", line / "client"
    socat = ManagedProcess(
        "socat-pty-pair",
        ["socat", "-d", "-d", f"pty,raw,echo=0,link={device_end}", f"pty,raw,echo=0,link={client_end}"],
        workdir / "socat.log",
    ).start()
    socat.wait_until(lambda: device_end.exists() and client_end.exists(), 10, "pty pair")
    argv = [
        *_argv(devices, "rtu", unknown_ids, False, request_log_path(workdir, "serial")),
        "--serial",
        str(device_end),
    ]
    device = ManagedProcess("modbus-serial-device", argv, workdir / "modbus-serial.log").start()
    try:
        device.wait_until(lambda: READY_LINE in device.log_tail(), 20, "serial server ready")
    except ComponentUnavailable:
        socat.stop()
        raise
    return socat, device, client_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="TCP port on 127.0.0.1")
    where.add_argument("--serial", help="serial device (RTU at 9600 8N1), e.g. one end of a socat pty pair")
    parser.add_argument("--device-id", type=int, default=1, help="slave id serving the values below")
    parser.add_argument("--holding", default="", help="holding registers: address=value,...")
    parser.add_argument("--input", default="", help="input registers: address=value,...")
    parser.add_argument("--coils", default="", help="coils: address=0|1,...")
    parser.add_argument("--discrete", default="", help="discrete inputs: address=0|1,...")
    parser.add_argument("--devices", default="{}", help='more slaves: {"3": {"holding": {"0": 7}, ...}}')
    parser.add_argument("--framer", choices=["socket", "rtu"], default="socket", help="TCP framing")
    parser.add_argument("--unknown-ids", choices=["exception", "silent"], default="exception")
    parser.add_argument("--silent", action="store_true", help="accept connections, never answer")
    parser.add_argument("--request-log", type=Path, help="JSON lines, one per request received")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    devices = {int(k): DeviceRegisters.from_json(v) for k, v in json.loads(args.devices).items()}
    if not devices or any((args.holding, args.input, args.coils, args.discrete)):
        legacy = (_parse(args.holding), _parse(args.input), _parse(args.coils), _parse(args.discrete))
        devices.setdefault(args.device_id, DeviceRegisters(*legacy))
    asyncio.run(
        serve(
            devices,
            port=args.port,
            serial=args.serial,
            framer=args.framer,
            unknown_ids=args.unknown_ids,
            silent=args.silent,
            request_log=args.request_log,
        )
    )


if __name__ == "__main__":
    main()
