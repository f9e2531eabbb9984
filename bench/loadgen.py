"""An open-loop HTTP load generator on asyncio.

Request *i* is due at ``start + i / rate`` and leaves then whether or not
earlier answers have come back (open loop: a slow server does not slow the
offered load down, so queueing shows in the latencies instead of hiding as a
lower rate). Latency is measured from the due time, so time spent waiting in
the client (a busy event loop, every pooled connection in use) counts too:
no coordinated omission. The first ``warmup_s`` of requests are sent but not
recorded (connections opened, caches warm).

Two clients: ``raw`` (default), a minimal HTTP/1.1 keep-alive GET client on
asyncio streams, and ``httpx``. On the 2-core bench machine httpx spent
~1.2 ms of CPU per request, so at 500 requests/s the client alone took most
of a core and its queueing showed up as server latency; the raw client spends
a small fraction of that.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx


@dataclass
class LoadResult:
    offered_rate: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    due_s: list[float] = field(default_factory=list)  # each latency's due time, from the first measured
    errors: Counter[str] = field(default_factory=Counter)
    served_from: Counter[str] = field(default_factory=Counter)
    achieved_rate: float = 0.0

    @property
    def completed(self) -> int:
        return len(self.latencies_ms)


@dataclass
class _Sample:
    due: float
    done: float
    outcome: str  # "ok" or what went wrong
    served_from: str


# (status, x-served-from) of one GET
Get = Callable[[str], Awaitable[tuple[int, str]]]


class _Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: bytes) -> None:
        self.reader, self.writer, self.host = reader, writer, host
        self.open = True  # false once the server said Connection: close

    async def get(self, target: str) -> tuple[int, str]:
        self.writer.write(b"GET " + target.encode() + b" HTTP/1.1\r\nHost: " + self.host + b"\r\n\r\n")
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await self.reader.readuntil(b"\r\n") != b"\r\n":
                        pass  # trailers
                    break
                await self.reader.readexactly(size + 2)
        else:
            raise ValueError("a response without a length on a keep-alive connection")
        self.open = headers.get(b"connection", b"").lower() != b"close"
        return status, headers.get(b"x-served-from", b"-").decode()


class _RawPool:
    """Up to ``size`` connections, the most recently used first (LIFO), so a low
    rate keeps a few connections busy instead of letting all of them idle out."""

    def __init__(self, base: str, size: int) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.size = size
        self.idle: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        self.all: list[_Connection] = []

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        connection = _Connection(reader, writer, f"{self.host}:{self.port}".encode())
        self.all.append(connection)
        return connection

    async def open(self) -> None:
        for connection in await asyncio.gather(*(self._open() for _ in range(self.size))):
            self.idle.put_nowait(connection)

    async def get(self, target: str) -> tuple[int, str]:
        connection = await self.idle.get()
        try:
            try:
                answer = await connection.get(target)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                # A kept-alive connection the server closed while idle (uvicorn
                # after 5 s): as any HTTP client does, retry once on a new one.
                partial = exc.partial if isinstance(exc, asyncio.IncompleteReadError) else b""
                if partial:
                    raise
                connection.writer.close()
                connection = await self._open()
                answer = await connection.get(target)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            connection.writer.close()
            self.idle.put_nowait(await self._open())  # replace the broken one
            raise
        if not connection.open:
            connection.writer.close()
            connection = await self._open()
        self.idle.put_nowait(connection)
        return answer

    async def close(self) -> None:
        for connection in self.all:
            connection.writer.close()


async def _one(get: Get, target: str, due: float) -> _Sample:
    try:
        status, served_from = await get(target)
    except (OSError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError) as exc:
        return _Sample(due, time.perf_counter(), type(exc).__name__, "")
    return _Sample(due, time.perf_counter(), "ok" if status == 200 else f"HTTP {status}", served_from)


async def _schedule(get: Get, targets: list[str], rate: float, total: int) -> list[_Sample]:
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(get, targets[i], due)))
    return list(await asyncio.gather(*tasks))


async def _run(
    base: str, targets: list[str], rate: float, total: int, connections: int, client: str
) -> list[_Sample]:
    if client == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120.0) as http:

            async def get(target: str) -> tuple[int, str]:
                response = await http.get(target)
                return response.status_code, response.headers.get("x-served-from", "-")

            return await _schedule(get, targets, rate, total)
    pool = _RawPool(base, connections)
    await pool.open()
    try:
        return await _schedule(pool.get, targets, rate, total)
    finally:
        await pool.close()


def open_loop(
    base: str,
    targets: list[str],
    rate: float,
    seconds: float,
    warmup_s: float = 2.0,
    connections: int = 32,
    client: str = "raw",
) -> LoadResult:
    """GET ``base + targets[i]`` in order at ``rate`` per second for ``warmup_s + seconds``."""
    warm = round(rate * warmup_s)
    total = warm + round(rate * seconds)
    if len(targets) < total:
        raise ValueError(f"{total} requests need as many targets, got {len(targets)}")
    samples = asyncio.run(_run(base, targets, rate, total, connections, client))
    result = LoadResult(rate, seconds)
    measured = samples[warm:]
    for sample in measured:
        if sample.outcome == "ok":
            result.latencies_ms.append((sample.done - sample.due) * 1000)
            result.served_from[sample.served_from] += 1
        else:
            result.errors[sample.outcome] += 1
    if measured:
        result.due_s = [s.due - measured[0].due for s in measured if s.outcome == "ok"]
        last_done = max(s.done for s in measured)
        result.achieved_rate = result.completed / max(last_done - measured[0].due, 1e-9)
    return result
