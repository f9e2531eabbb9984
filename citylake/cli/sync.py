"""``citylake sync``: ship an edge's lake to its region (push) and receive it there (serve)."""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Annotated

import httpx
import typer
import uvicorn
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.schemas import DataLayout
from citylake.sync.receiver import ReceiverSettings, create_app
from citylake.sync.sender import (
    Counters,
    EdgeSync,
    PushReport,
    RegionUnreachable,
    SyncFailed,
    follow,
    status_path,
    write_status,
)

app = typer.Typer(help="Edge → region sync of the lake.", no_args_is_help=True)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="listen address (default sync.host)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default sync.port)")] = None,
) -> None:
    """Region: receive edges' lake files into this site's lake, verified by sha256."""
    setup_logging()
    loaded = load(config)
    settings = loaded.config.sync
    app_ = create_app(ReceiverSettings(loaded.config.data_dir, settings))
    console.print(f"sync receiver on http://{host or settings.host}:{port or settings.port}/v1/sync/sites/…")
    uvicorn.run(app_, host=host or settings.host, port=port or settings.port, log_level="warning")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print(report: PushReport, totals: Counters | None = None) -> None:
    c = totals or report.counters
    table = Table("in sync", "lake", "uploaded", "sent", "resumed", "metadata", "commits", "in / out", "rate")
    table.add_row(
        "yes" if report.in_sync else "no",
        f"{report.lake_files} files, {_size(report.lake_bytes)}",
        f"{c.files_uploaded} files, {_size(c.file_bytes_uploaded)}",
        _size(c.payload_bytes),
        _size(c.resumed_bytes),
        _size(c.metadata_bytes),
        str(c.commits),
        f"{c.files_added} / {c.files_removed}",
        f"{_size(c.payload_bytes / c.upload_s)}/s" if c.upload_s else "",
    )
    console.print(table)


@app.command()
def push(
    config: ConfigOption = DEFAULT_CONFIG,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="keep shipping new lake files until stopped")
    ] = False,
    region_url: Annotated[
        str | None, typer.Option(help="the region's receiver (default sync.region_url)")
    ] = None,
    give_up_after: Annotated[
        float, typer.Option(min=1, help="one-shot: exit 1 if not in sync after this many seconds")
    ] = 600.0,
) -> None:
    """Edge: ship the lake files the region lacks (resumable, paced, verified), once or --follow."""
    setup_logging()
    loaded = load(config)
    settings = loaded.config.sync
    url = region_url or settings.region_url
    if not url:
        fail("no region to push to: set sync.region_url in the config or pass --region-url", code=2)
    layout = DataLayout(loaded.config.data_dir)
    timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0))
    with httpx.Client(base_url=url, timeout=timeout) as client:
        try:
            sync = EdgeSync(layout, loaded.config.site, settings, client)
        except ValueError as exc:
            fail(str(exc), code=2)
        if follow_:
            stop = threading.Event()

            def stop_on(signum: int, frame: FrameType | None) -> None:
                stop.set()

            signal.signal(signal.SIGTERM, stop_on)
            signal.signal(signal.SIGINT, stop_on)
            console.print(f"pushing {loaded.config.site} to {url}; status in {status_path(layout)}")
            totals = follow(sync, stop)
            sent = _size(totals.payload_bytes)
            console.print(f"stopped; since start: {totals.files_uploaded} files uploaded, {sent} sent")
            return
        _once(sync, layout, give_up_after)


def _once(sync: EdgeSync, layout: DataLayout, give_up_after: float) -> None:
    deadline = time.monotonic() + give_up_after
    totals = Counters()
    rounds = 0
    while True:
        try:
            report = sync.round()
        except SyncFailed as exc:
            fail(f"the region refused: {exc}")
        except RegionUnreachable as exc:
            if time.monotonic() >= deadline:
                fail(str(exc))
            continue
        rounds += 1
        totals.add(report.counters)
        write_status(status_path(layout), report, totals, rounds)
        if report.in_sync:
            _print(report, totals)
            return
        if time.monotonic() >= deadline:
            _print(report, totals)
            fail(f"not in sync after {give_up_after:.0f}s (the edge's lake kept changing, or files vanished)")
