"""The scale run's query load as a child process of its own.

In the orchestrator's process the load shared the GIL with sampling and the
lake watcher: at 200 requests/s planned it sent 29.2/s, and its latencies held
the orchestrator's own delays (issue 12). Here it runs alone, like the MQTT
fleet: open loop at ``--rate`` (``QueryLoad``), a device among those the fleet
reports (read from the fleet's status file), progress written as JSON to
``--status`` every second, and every request, one ``[t, kind, latency_ms,
status]`` row per line, to ``--out`` when it stops (SIGTERM or ``--duration``).
``t`` is seconds since t = 0, a ``time.monotonic()`` of the orchestrator
(the same clock on one machine), so the rows line up with the run's samples.

The start is a handshake, because the imports take seconds on a busy machine
and would count against the rate: once ready to send, the process writes
``"ready": true`` to its status file and waits for the ``--go`` file, which
holds t = 0; with no ``--go`` it starts at once.

    python -m citylake_devstack.scale.queries --url http://127.0.0.1:3500/v1.0/invoke/query/method \
        --rate 200 --go go.txt --fleet-status fleet.json --status queries.json --out queries.jsonl
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from citylake_devstack.scale.fleet import read_status
from citylake_devstack.scale.load import QueryLoad
from citylake_devstack.scalereport.record import Query

STATUS_EVERY_S = 1.0
GO_POLL_S = 0.05


def status_of(queries: list[Query], elapsed_s: float, done: bool) -> dict[str, float | bool]:
    """Sent (shed ones included: open loop, they were due), answered (any
    HTTP status) and failed (no answer or 5xx) so far."""
    answered = sum(q.status != 0 for q in queries)
    return {
        "sent": len(queries),
        "answered": answered,
        "failed": sum(q.error for q in queries),
        "elapsed_s": round(elapsed_s, 2),
        "done": done,
    }


def write_rows(path: Path, queries: Iterable[Query]) -> Path:
    partial = path.with_name(f".{path.name}.tmp")
    with partial.open("w", encoding="utf-8") as handle:
        for q in queries:
            handle.write(json.dumps([round(q.t, 3), q.kind, round(q.latency_ms, 3), q.status]) + "\n")
    partial.replace(path)
    return path


def read_rows(path: Path) -> list[Query]:
    """The load's requests; a malformed line is an error naming the line."""
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            t, kind, latency_ms, status = json.loads(line)
            queries.append(Query(float(t), str(kind), float(latency_ms), int(status)))
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"{path}:{number}: not a [t, kind, latency_ms, status] row: {line[:80]!r}"
            ) from exc
    return queries


def start_at(go: Path, t0: float) -> None:
    """Tells a ready load process to send from ``t0`` (``time.monotonic()``)."""
    partial = go.with_name(f".{go.name}.tmp")
    partial.write_text(repr(t0))
    partial.replace(go)


def _wait_for_go(go: Path, stop: threading.Event) -> float | None:
    while not stop.is_set():
        try:
            return float(go.read_text())
        except FileNotFoundError:
            stop.wait(GO_POLL_S)
    return None


def _write_status(path: Path, document: dict[str, float | bool]) -> None:
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(document))
    partial.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="the query service's (or daprd's invoke) URL")
    parser.add_argument("--rate", type=float, required=True, help="requests per second, open loop")
    parser.add_argument("--go", type=Path, default=None, help="wait for this file: it holds t = 0")
    parser.add_argument("--fleet-status", type=Path, default=None, help="the MQTT fleet's status file")
    parser.add_argument("--duration", type=float, default=None, help="seconds; default until SIGTERM")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--max-in-flight", type=int, default=200)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.rate <= 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    t0 = time.monotonic()
    fleet_status: Path | None = args.fleet_status

    seen = {"at": -1.0, "count": 1}

    def reporting() -> int:
        # The fleet rewrites its status about once a second: read it no more often.
        now = time.monotonic()
        if fleet_status is not None and now - seen["at"] >= 1.0:
            seen["at"], seen["count"] = now, int(read_status(fleet_status).get("devices_reported", 0))
        return int(seen["count"])

    load = QueryLoad(
        args.url.rstrip("/"),
        args.rate,
        lambda: time.monotonic() - t0,  # t0 as set below, before the first request
        reporting,
        timeout_s=args.timeout,
        max_in_flight=args.max_in_flight,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if args.go is not None:
        _write_status(args.status, {**status_of([], 0.0, False), "ready": True})
        go = _wait_for_go(args.go, stop)
        if go is None:  # stopped before the start
            write_rows(args.out, [])
            return
        t0 = go
        stop.wait(max(0.0, t0 - time.monotonic()))
    started = time.monotonic()
    load.start()
    try:
        while not stop.wait(STATUS_EVERY_S):
            _write_status(args.status, status_of(load.queries, time.monotonic() - started, False))
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
    finally:
        load.stop()
        queries = list(load.queries)
        write_rows(args.out, queries)
        _write_status(args.status, status_of(queries, time.monotonic() - started, True))


if __name__ == "__main__":
    main()
