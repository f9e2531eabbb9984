"""A Siemens S7 PLC played by python-snap7's own server (``snap7.server``),
run as its own process: ``citylake simulate s7 --port P``.

It serves a pump station's data block and merkers (all writable by any S7
client, as an engineering station would):

| address | type | what | initial |
|---|---|---|---|
| ``DB1.DBD0`` | REAL | outlet pressure, bar | 4.25 |
| ``DB1.DBW4`` | INT | motor temperature, 0.1 degC | 415 |
| ``DB1.DBD6`` | DINT | run hours | 123456 |
| ``DB1.DBX10.3`` | BOOL | pump running | true |
| ``MW20`` | WORD | alarm word | 0 |
| ``M2.1`` | BOOL | remote mode | true |

With ``--tick-s`` > 0 the pressure moves on a wave every tick.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from citylake_devstack.process import ManagedProcess, free_port

log = logging.getLogger("citylake_devstack.simulators.s7")
READY_LINE = "s7 plc ready"
DB1_SIZE = 64
MK_SIZE = 32


def serve(port: int, tick_s: float = 0.0, duration_s: float | None = None, host: str = "127.0.0.1") -> None:
    import snap7
    from snap7.type import SrvArea
    from snap7.util import set_bool, set_dint, set_int, set_real, set_word

    db1 = bytearray(DB1_SIZE)
    set_real(db1, 0, 4.25)
    set_int(db1, 4, 415)
    set_dint(db1, 6, 123456)
    set_bool(db1, 10, 3, True)
    merkers = bytearray(MK_SIZE)
    set_bool(merkers, 2, 1, True)
    set_word(merkers, 20, 0)
    server = snap7.server.Server(log=False)
    server.register_area(SrvArea.DB, 1, db1)
    server.register_area(SrvArea.MK, 0, merkers)
    server.start_to(host, tcp_port=port)
    log.info("%s on %s:%d", READY_LINE, host, port)
    started = time.monotonic()
    tick = 0
    try:
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(tick_s if tick_s > 0 else 0.5)
            if tick_s > 0:
                tick += 1
                set_real(db1, 0, round(4.25 + 0.5 * math.sin(tick / 5), 3))
    finally:
        server.stop()


def start_s7_plc(workdir: Path, port: int | None = None, tick_s: float = 0.0) -> tuple[ManagedProcess, str]:
    """Start the PLC on a free TCP port (by default); returns the process and its ``s7://`` url."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "citylake_devstack.simulators.s7",
        "--port",
        str(port),
        "--tick-s",
        str(tick_s),
    ]
    process = ManagedProcess(f"s7-plc:{port}", argv, workdir / f"s7-{port}.log").start()
    process.wait_port(port, 30)
    return process, f"s7://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=102, help="TCP port (ISO-on-TCP's own is 102)")
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on")
    parser.add_argument("--tick-s", type=float, default=0.0, help="pressure moves every tick; 0: fixed")
    parser.add_argument("--duration-s", type=float, default=None, help="seconds to run; default forever")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    serve(args.port, args.tick_s, args.duration_s, args.host)


if __name__ == "__main__":
    main()
