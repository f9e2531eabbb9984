"""A Modbus TCP device played by pymodbus's own server, run as its own process:
``python -m citylake.devstack.modbus_device --port P --holding 0=100,1=200``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import StartAsyncTcpServer

from citylake.devstack.process import ManagedProcess, free_port

BLOCK_SIZE = 10_000


def _parse(spec: str) -> dict[int, int]:
    values: dict[int, int] = {}
    for item in filter(None, spec.split(",")):
        address, value = item.split("=")
        values[int(address)] = int(value)
    return values


def _block(values: dict[int, int]) -> ModbusSequentialDataBlock:
    registers = [0] * BLOCK_SIZE
    for address, value in values.items():
        registers[address] = value
    # pymodbus keeps the Modbus "+1" convention: protocol address 0 is block address 1.
    return ModbusSequentialDataBlock(1, registers)  # type: ignore[no-untyped-call]


async def serve(port: int, holding: dict[int, int], inputs: dict[int, int], device_id: int) -> None:
    device = ModbusDeviceContext(hr=_block(holding), ir=_block(inputs), co=_block({}), di=_block({}))
    context = ModbusServerContext(devices={device_id: device}, single=False)
    await StartAsyncTcpServer(context, address=("127.0.0.1", port))


def start_modbus_device(
    workdir: Path, holding: dict[int, int], inputs: dict[int, int] | None = None, device_id: int = 1
) -> tuple[ManagedProcess, int]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "citylake.devstack.modbus_device",
        "--port",
        str(port),
        "--device-id",
        str(device_id),
        "--holding",
        ",".join(f"{a}={v}" for a, v in holding.items()),
        "--input",
        ",".join(f"{a}={v}" for a, v in (inputs or {}).items()),
    ]
    process = ManagedProcess(f"modbus-device:{port}", argv, workdir / f"modbus-{port}.log").start()
    process.wait_port(port, 20)
    return process, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device-id", type=int, default=1)
    parser.add_argument("--holding", default="")
    parser.add_argument("--input", default="")
    args = parser.parse_args()
    asyncio.run(serve(args.port, _parse(args.holding), _parse(args.input), args.device_id))


if __name__ == "__main__":
    main()
