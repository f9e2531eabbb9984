"""A BACnet/IP device played by bacpypes3's own local objects, run as its own
process: ``citylake simulate bacnet --port P [--instance N] [--tick-s T]``.

It answers Who-Is, ReadProperty(Multiple), WriteProperty and SubscribeCOV
on 127.0.0.1:P as an air-handling unit controller would:

| object | name | units | |
|---|---|---|---|
| ``analog-input,1`` | supply-air-temp | degrees-celsius | a wave every ``--tick-s`` (COV increment 0.1) |
| ``analog-input,2`` | return-air-co2 | parts-per-million | fixed 450 |
| ``analog-value,1`` | temp-setpoint | degrees-celsius | fixed 21.0, writable |
| ``binary-input,1`` | supply-fan-status | | active |
| ``multi-state-value,1`` | ahu-mode | | 2 of off/occupied/unoccupied |

Every property is writable, as on bacpypes3's local objects: an operator
workstation (or a test) sets ``out-of-service``, ``reliability`` and
``event-state`` and the object's ``status-flags`` follow, as BACnet defines
them. An object that is out of service stops following the wave.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import socket
import sys
from pathlib import Path

from citylake_devstack.process import ManagedProcess, free_port

log = logging.getLogger("citylake_devstack.simulators.bacnet")
READY_LINE = "bacnet device ready"


async def serve(port: int, instance: int, tick_s: float, host: str = "127.0.0.1") -> None:
    from bacpypes3.ipv4.app import NormalApplication
    from bacpypes3.local.analog import AnalogInputObject, AnalogValueObject
    from bacpypes3.local.binary import BinaryInputObject
    from bacpypes3.local.device import DeviceObject
    from bacpypes3.local.multistate import MultiStateValueObject
    from bacpypes3.pdu import IPv4Address

    device = DeviceObject(
        objectIdentifier=("device", instance),
        objectName=f"ahu-{instance}",
        vendorIdentifier=999,
        modelName="citylake simulated AHU",
    )
    # bacpypes3 retries a failing bind forever in a task of its own: fail now instead.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, port))
    app = NormalApplication(device, IPv4Address(f"{host}:{port}"))
    flags = [0, 0, 0, 0]
    supply = AnalogInputObject(
        objectIdentifier=("analog-input", 1),
        objectName="supply-air-temp",
        presentValue=18.0,
        units="degreesCelsius",
        statusFlags=flags,
        covIncrement=0.1,
    )
    objects = [
        supply,
        AnalogInputObject(
            objectIdentifier=("analog-input", 2),
            objectName="return-air-co2",
            presentValue=450.0,
            units="partsPerMillion",
            statusFlags=flags,
            covIncrement=10.0,
        ),
        AnalogValueObject(
            objectIdentifier=("analog-value", 1),
            objectName="temp-setpoint",
            presentValue=21.0,
            units="degreesCelsius",
            statusFlags=flags,
        ),
        BinaryInputObject(
            objectIdentifier=("binary-input", 1),
            objectName="supply-fan-status",
            presentValue="active",
            statusFlags=flags,
        ),
        MultiStateValueObject(
            objectIdentifier=("multi-state-value", 1),
            objectName="ahu-mode",
            presentValue=2,
            numberOfStates=3,
            stateText=["off", "occupied", "unoccupied"],
            statusFlags=flags,
        ),
    ]
    for obj in objects:
        app.add_object(obj)
    # bacpypes3 binds its UDP socket in a task of its own: let it run before
    # saying ready, so a client's first Who-Is is not sent into the void.
    await asyncio.sleep(0.2)
    log.info("%s: device %d on %s:%d", READY_LINE, instance, host, port)
    tick = 0
    while True:
        await asyncio.sleep(tick_s if tick_s > 0 else 3600)
        if tick_s <= 0 or supply.outOfService:
            continue
        tick += 1
        supply.presentValue = round(18.0 + 2.0 * math.sin(tick / 5), 2)


def start_bacnet_device(
    workdir: Path, port: int | None = None, instance: int = 1001, tick_s: float = 0.0
) -> tuple[ManagedProcess, str]:
    """Start the device on a free UDP port (by default); returns the process and
    its ``host:port``, once it has bound its socket."""
    port = port or free_udp_port()
    argv = [
        sys.executable,
        "-m",
        "citylake_devstack.simulators.bacnet",
        "--port",
        str(port),
        "--instance",
        str(instance),
        "--tick-s",
        str(tick_s),
    ]
    process = ManagedProcess(f"bacnet-device:{port}", argv, workdir / f"bacnet-{port}.log").start()
    process.wait_until(lambda: READY_LINE in process.log_tail(), 30, f"BACnet device on UDP {port}")
    return process, f"127.0.0.1:{port}"


def free_udp_port() -> int:
    """A UDP port nobody is bound to on 127.0.0.1 (``free_port`` checks TCP)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=47808, help="UDP port")
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to bind")
    parser.add_argument("--instance", type=int, default=1001, help="device object instance")
    parser.add_argument("--tick-s", type=float, default=1.0, help="how often supply-air-temp moves; 0: fixed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args.port, args.instance, args.tick_s, args.host))


if __name__ == "__main__":
    main()
