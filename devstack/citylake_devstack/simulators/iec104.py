"""An IEC 60870-5-104 RTU played by c104's own server (lib60870), run as its
own process: ``citylake simulate iec104 --port P [--common-address CA]``.

One station (common address ``--common-address``, default 47) of a 110 kV
feeder bay:

| IOA | type | what | initial |
|---|---|---|---|
| 1001 | M_ME_NC_1 short float | bus voltage, kV | 110.5 |
| 1002 | M_ME_NB_1 scaled | active power, 0.1 MW per step | -120 |
| 1003 | M_ME_TF_1 short float + CP56Time2a | frequency, Hz | 49.98 |
| 2001 | M_SP_NA_1 single point | breaker closed | on |
| 2002 | M_DP_NA_1 double point | disconnector | on (2) |

It answers general interrogation with every point (and with ``--extra-ioas``
more points at IOA 50001.., which a client has not configured). Once a client
has connected, after ``--scenario-delay-s`` it sends the **scenario**
spontaneously (COT 3), one step each ``--step-s``:

1. 1001 = 111.25 kV, quality IV|NT (invalid, not topical)
2. 1002 = 32767 (raw), quality OV (overflow)
3. 1003 = 50.01 Hz, time tag ``--time-tag-ms`` (default 1764072000000), good
4. 2001 = off, quality BL (blocked)
5. 2002 = intermediate (0), quality SB (substituted)
6. 1001 = 110.75 kV, good

With ``--tick-s`` > 0 it then sends the voltage every tick (a slow wave).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from citylake_devstack.process import ManagedProcess, free_port

log = logging.getLogger("citylake_devstack.simulators.iec104")
READY_LINE = "iec104 rtu ready"
SCENARIO_DONE = "iec104 scenario sent"


def serve(
    port: int,
    common_address: int = 47,
    host: str = "127.0.0.1",
    extra_ioas: int = 0,
    scenario_delay_s: float = 1.0,
    step_s: float = 0.1,
    time_tag_ms: int = 1_764_072_000_000,
    tick_s: float = 0.0,
    duration_s: float | None = None,
) -> None:
    import c104

    server = c104.Server(ip=host, port=port, tick_rate_ms=50)
    station = server.add_station(common_address=common_address)
    if station is None:
        raise RuntimeError(f"c104 refused station {common_address}")

    def point(ioa: int, kind: c104.Type, value: Any) -> c104.Point:
        added = station.add_point(io_address=ioa, type=kind)
        if added is None:
            raise RuntimeError(f"c104 refused IOA {ioa}")
        added.value = value
        return added

    voltage = point(1001, c104.Type.M_ME_NC_1, 110.5)
    power = point(1002, c104.Type.M_ME_NB_1, c104.Int16(-120))
    frequency = point(1003, c104.Type.M_ME_TF_1, 49.98)
    breaker = point(2001, c104.Type.M_SP_NA_1, True)
    disconnector = point(2002, c104.Type.M_DP_NA_1, c104.Double.ON)
    for n in range(extra_ioas):
        point(50001 + n, c104.Type.M_ME_NC_1, float(n))
    server.start()
    log.info("%s: CA %d on %s:%d", READY_LINE, common_address, host, port)
    started = time.monotonic()
    q = c104.Quality
    invalid_not_topical = q.Invalid | q.NonTopical  # type: ignore[operator]  # c104's stub lacks __or__
    stamp = datetime.fromtimestamp(time_tag_ms / 1000)  # c104 takes naive local time, as pybind11 does
    scenario = [
        (voltage, c104.ShortInfo(actual=111.25, quality=invalid_not_topical)),
        (power, c104.ScaledInfo(actual=c104.Int16(32767), quality=q.Overflow)),
        (frequency, c104.ShortInfo(actual=50.01, recorded_at=stamp)),
        (breaker, c104.SingleInfo(on=False, quality=q.Blocked)),
        (disconnector, c104.DoubleInfo(state=c104.Double.INTERMEDIATE, quality=q.Substituted)),
        (voltage, c104.ShortInfo(actual=110.75)),
    ]
    try:
        while not server.has_active_connections:
            time.sleep(0.05)
            if duration_s is not None and time.monotonic() - started > duration_s:
                return
        time.sleep(scenario_delay_s)
        for target, info in scenario:
            target.info = info
            target.transmit(cause=c104.Cot.SPONTANEOUS)
            time.sleep(step_s)
        log.info(SCENARIO_DONE)
        tick = 0
        while duration_s is None or time.monotonic() - started < duration_s:
            time.sleep(tick_s if tick_s > 0 else 0.5)
            if tick_s > 0 and server.has_active_connections:
                tick += 1
                voltage.info = c104.ShortInfo(actual=round(110.5 + math.sin(tick / 5), 3))
                voltage.transmit(cause=c104.Cot.SPONTANEOUS)
    finally:
        server.stop()


def start_iec104_rtu(
    workdir: Path, port: int | None = None, extra_ioas: int = 0, scenario_delay_s: float = 1.0
) -> tuple[ManagedProcess, str]:
    """Start the RTU on a free TCP port (by default); returns the process and
    its ``iec104://`` url once it accepts connections."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "citylake_devstack.simulators.iec104",
        "--port",
        str(port),
        "--extra-ioas",
        str(extra_ioas),
        "--scenario-delay-s",
        str(scenario_delay_s),
    ]
    process = ManagedProcess(f"iec104-rtu:{port}", argv, workdir / f"iec104-{port}.log").start()
    process.wait_until(lambda: READY_LINE in process.log_tail(), 30, f"IEC 104 RTU on TCP {port}")
    # c104 listens from a thread of its own: a client that connects before it
    # does waits out lib60870's reconnect delay. A bare TCP connect is no
    # active (STARTDT) connection, so it does not start the scenario.
    process.wait_port(port, 30)
    return process, f"iec104://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, default=2404, help="TCP port")
    parser.add_argument("--host", default="127.0.0.1", help="IPv4 address to listen on")
    parser.add_argument("--common-address", type=int, default=47, help="the station's common address")
    parser.add_argument("--extra-ioas", type=int, default=0, help="points a client has not configured")
    parser.add_argument("--scenario-delay-s", type=float, default=1.0, help="wait after the first connect")
    parser.add_argument("--step-s", type=float, default=0.1, help="between scenario steps")
    parser.add_argument("--time-tag-ms", type=int, default=1_764_072_000_000, help="step 3's time tag")
    parser.add_argument("--tick-s", type=float, default=0.0, help="after the scenario: voltage every tick")
    parser.add_argument("--duration-s", type=float, default=None, help="seconds to run; default forever")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    serve(
        args.port,
        args.common_address,
        args.host,
        args.extra_ioas,
        args.scenario_delay_s,
        args.step_s,
        args.time_tag_ms,
        args.tick_s,
        args.duration_s,
    )


if __name__ == "__main__":
    main()
