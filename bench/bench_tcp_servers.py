"""N concurrent TCP connections on one process: the HJ 212 and JT/T 808
servers (the real adapters in a real ``IngestRunner`` landing Parquet) against
a bare asyncio echo server, in the same run.

Each server runs in its own process (this script with ``--serve``); the
clients run here on one event loop. Per server:

1. connect: N connections opened, at most ``--concurrency`` connects in flight;
   connection rate = N / time until all are established;
2. messages: every connection sends ``--messages`` messages one after the
   other, each waiting for its answer (HJ 212: a real-time upload with
   Flag=5 and its CN 9014; JT/T 808: a 0x0200 location and its 0x8001; echo: a
   frame of the same size echoed back). The adapters answer only after the
   landing commit, so their latency includes the flush (``--flush-age``).
   Message rate = answers / time for all of them; latency p50/p99 from
   ``citylake_devstack.scalereport.summary.quantile``.

The ratios are the adapter's rate over the echo server's. Full run:
``python bench/bench_tcp_servers.py --connections 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from citylake.ingest.hj212.codec import FrameSplitter as HJFrames
from citylake.ingest.hj212.codec import encode_packet
from citylake.ingest.jt808 import messages as jt
from citylake.ingest.jt808.codec import FrameSplitter as JTFrames
from citylake.ingest.jt808.codec import encode_message
from citylake_devstack import free_port
from citylake_devstack.scalereport.summary import quantile
from citylake_devstack.simulators.hj212 import qn_of, realtime_cp, station_mn
from citylake_devstack.simulators.jt808 import location_body, terminal_phone

SERVERS = ("echo", "hj212", "jt808")
SECRET = "bench-secret-0123456789abcdef"


def raise_nofile() -> int:
    """As many descriptors as the hard limit allows: 10k connections need 10k+."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server processes ---------------------------------------------------


async def serve_echo(port: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


async def serve_adapter(kind: str, port: int, data_dir: Path, flush_age_s: float) -> None:
    from citylake.ingest.base import Source
    from citylake.ingest.runner import FlushPolicy, IngestRunner
    from citylake.schemas import DataLayout

    url = f"tcp://127.0.0.1:{port}"
    source: Source
    common = {"name": kind, "type": kind, "url": url, "max_connections": 20_000}
    if kind == "hj212":
        from citylake.ingest.hj212.adapter import HJ212Source
        from citylake.ingest.hj212.config import HJ212SourceConfig

        source = HJ212Source(HJ212SourceConfig.model_validate(common))
    else:
        from citylake.ingest.jt808.adapter import JT808Source
        from citylake.ingest.jt808.config import JT808SourceConfig

        # Locations without the auth round trip: the same one request and one
        # answer per message as the echo client.
        source = JT808Source(
            JT808SourceConfig.model_validate({**common, "auth_secret": SECRET, "require_auth": False})
        )
    runner = IngestRunner([source], DataLayout(data_dir), "bench", FlushPolicy(max_age_s=flush_age_s))
    await runner.start()
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.stop()


# -- the clients --------------------------------------------------------------


@dataclass
class Figures:
    server: str
    connections: int
    connect_s: float
    messages: int
    answered: int
    message_s: float
    latencies_ms: list[float]

    @property
    def connect_rate(self) -> float:
        return self.connections / self.connect_s

    @property
    def message_rate(self) -> float:
        return self.answered / self.message_s


class Client:
    """One connection speaking one server's request/answer."""

    def __init__(self, kind: str, index: int) -> None:
        self.kind = kind
        self.index = index
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.hj = HJFrames(4096)
        self.jt = JTFrames(4096)
        self.serial = 0

    def request(self, step: int) -> bytes:
        now = dt.datetime.now(dt.UTC)
        if self.kind == "jt808":
            self.serial += 1
            return encode_message(
                jt.LOCATION, terminal_phone(self.index), self.serial, location_body(step, now), 1
            )
        frame = encode_packet(
            qn_of(now), "22", "2011", "123456", station_mn(self.index), 5, realtime_cp(now, step)
        )
        return frame  # the echo server gets the HJ 212 frame back

    async def answer(self, size: int) -> None:
        assert self.reader is not None
        if self.kind == "echo":
            await self.reader.readexactly(size)
            return
        frames = self.hj if self.kind == "hj212" else self.jt
        while True:
            data = await self.reader.read(4096)
            if not data:
                raise ConnectionError("server closed")
            if any(isinstance(f, bytes) for f in frames.feed(data)):
                return


async def run_clients(kind: str, port: int, connections: int, messages: int, concurrency: int) -> Figures:
    clients = [Client(kind, i) for i in range(connections)]
    gate = asyncio.Semaphore(concurrency)

    async def connect(client: Client) -> None:
        async with gate:
            for attempt in range(20):
                try:
                    client.reader, client.writer = await asyncio.open_connection("127.0.0.1", port)
                    return
                except OSError:
                    await asyncio.sleep(0.05 * (attempt + 1))  # the listen backlog overflowed
            raise ConnectionError(f"connection {client.index} failed 20 times")

    started = time.perf_counter()
    await asyncio.gather(*(connect(c) for c in clients))
    connect_s = time.perf_counter() - started

    latencies: list[float] = []
    answered = 0

    async def talk(client: Client) -> None:
        nonlocal answered
        assert client.writer is not None
        for step in range(messages):
            frame = client.request(step)
            sent = time.perf_counter()
            client.writer.write(frame)
            await client.answer(len(frame))
            latencies.append((time.perf_counter() - sent) * 1000)
            answered += 1

    started = time.perf_counter()
    await asyncio.gather(*(talk(c) for c in clients))
    message_s = time.perf_counter() - started
    for client in clients:
        if client.writer is not None:
            client.writer.close()
    return Figures(kind, connections, connect_s, connections * messages, answered, message_s, latencies)


async def bench_one(kind: str, args: argparse.Namespace) -> Figures:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as work:
        command = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--data-dir", work]
        command += ["--flush-age", str(args.flush_age)]
        server = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
        try:
            assert server.stdout is not None
            line = await server.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"{kind} server did not start (exit {server.returncode})")
            return await run_clients(kind, port, args.connections, args.messages, args.concurrency)
        finally:
            server.terminate()
            await server.wait()


def report(results: list[Figures], args: argparse.Namespace) -> None:
    echo = results[0]
    print(
        f"{args.connections} connections, {args.messages} messages each (one in flight per connection), "
        f"{args.concurrency} connects in flight, adapters' flush age {args.flush_age:g} s, "
        f"nofile {raise_nofile()}"
    )
    print(
        f"{'server':8}{'connect/s':>11}{'ratio':>7}{'msg/s':>10}{'ratio':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'answered':>10}"
    )
    for r in results:
        print(
            f"{r.server:8}{r.connect_rate:11.0f}{r.connect_rate / echo.connect_rate:7.2f}"
            f"{r.message_rate:10.0f}{r.message_rate / echo.message_rate:7.2f}"
            f"{quantile(r.latencies_ms, 0.5):9.1f}{quantile(r.latencies_ms, 0.99):9.1f}"
            f"{r.answered:>10}"
        )


async def main(args: argparse.Namespace) -> None:
    raise_nofile()
    results = [await bench_one(kind, args) for kind in SERVERS]
    report(results, args)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5, help="messages per connection")
    parser.add_argument("--concurrency", type=int, default=500, help="connects in flight")
    parser.add_argument("--flush-age", type=float, default=0.5, help="the adapters' landing flush age (s)")
    parser.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    raise_nofile()
    if arguments.serve == "echo":
        asyncio.run(serve_echo(arguments.port))
    elif arguments.serve:
        asyncio.run(serve_adapter(arguments.serve, arguments.port, arguments.data_dir, arguments.flush_age))
    else:
        asyncio.run(main(arguments))
