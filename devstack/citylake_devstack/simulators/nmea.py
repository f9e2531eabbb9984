"""A simulated NMEA 0183 talker: a TCP server that streams GGA, RMC, VTG and
GSA sentences (rendered by pynmea2, checksums included) of a boat moving
along a track, to every client that connects, as a GPS receiver's network
port or a multiplexer does. ``hostile`` adds a bad checksum, a line of
garbage and an overlong line to every epoch after the first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math

import pynmea2

# Published sentences (pynmea2's README and the NMEA 0183 reference's
# examples) with the values they stand for: facts for the codec's tests.
PUBLISHED_SENTENCES: dict[str, bytes] = {
    "gga": b"$GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000*6D",
    "rmc": b"$GPRMC,081836,A,3751.65,S,14507.36,E,000.0,360.0,130998,011.3,E*62",
    "vtg": b"$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K*48",
    "gsa": b"$GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1*39",
}


def _ddmm(value: float, width: int) -> str:
    degrees = int(abs(value))
    minutes = (abs(value) - degrees) * 60
    return f"{degrees:0{width}d}{minutes:07.4f}"


def epoch_sentences(step: int, when: dt.datetime) -> list[bytes]:
    """One fix epoch: GGA, RMC, VTG, GSA (and a GSV the adapter ignores)."""
    lat = 31.2304 + 0.0002 * step
    lon = 121.4737 + 0.0001 * math.sin(step / 10)
    knots = 5.0 + (step % 10) / 10
    course = (45 + step) % 360
    hhmmss = when.strftime("%H%M%S") + f".{when.microsecond // 10000:02d}"
    lat_s, lon_s = _ddmm(lat, 2), _ddmm(lon, 3)
    ns, ew = ("N" if lat >= 0 else "S"), ("E" if lon >= 0 else "W")
    sentences = [
        pynmea2.GGA(
            "GP", "GGA", (hhmmss, lat_s, ns, lon_s, ew, "1", "09", "0.9", "12.5", "M", "8.1", "M", "", "")
        ),
        pynmea2.RMC(
            "GP",
            "RMC",
            (
                hhmmss,
                "A",
                lat_s,
                ns,
                lon_s,
                ew,
                f"{knots:.1f}",
                f"{course:.1f}",
                when.strftime("%d%m%y"),
                "",
                "",
            ),
        ),
        pynmea2.VTG(
            "GP", "VTG", (f"{course:.1f}", "T", "", "M", f"{knots:.1f}", "N", f"{knots * 1.852:.1f}", "K")
        ),
        pynmea2.GSA(
            "GP",
            "GSA",
            ("A", "3", "04", "05", "09", "12", "24", "", "", "", "", "", "", "", "1.8", "0.9", "1.5"),
        ),
        pynmea2.GSV(
            "GP",
            "GSV",
            (
                "1",
                "1",
                "04",
                "04",
                "45",
                "120",
                "40",
                "05",
                "30",
                "200",
                "35",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
            ),
        ),
    ]
    return [s.render().encode() + b"\r\n" for s in sentences]


HOSTILE_LINES = [
    b"$GPGGA,000000.00,3113.8240,N,12128.4220,E,1,09,0.9,12.5,M,8.1,M,,*00\r\n",  # bad checksum
    b"\xff\xfe garbage from a confused multiplexer\r\n",
    b"$GPGGA," + b"9" * 1000 + b"\r\n",  # over any sane max_line_bytes
]


async def serve_talker(
    host: str,
    port: int,
    rate_hz: float,
    epochs: int | None,
    hostile: bool,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled: each client gets its own stream from epoch 0
    (``epochs`` of them, then the connection closes; None: forever)."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        start = dt.datetime.now(dt.UTC).replace(microsecond=0)
        step = 0
        try:
            while epochs is None or step < epochs:
                when = start + dt.timedelta(seconds=step)
                lines = epoch_sentences(step, when)
                if hostile and step > 0:
                    lines += HOSTILE_LINES
                writer.write(b"".join(lines))
                await writer.drain()
                step += 1
                await asyncio.sleep(1 / rate_hz)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(talk, host, port)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main() -> None:
    """``python -m citylake_devstack.simulators.nmea``: the talker without the
    CLI's imports (tests start it as a process; ``citylake simulate nmea`` is
    the same talker)."""
    import argparse

    parser = argparse.ArgumentParser(description="NMEA 0183 talker on TCP")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10110)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--hostile", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve_talker(args.host, args.port, args.rate, args.epochs or None, args.hostile))


if __name__ == "__main__":
    main()
