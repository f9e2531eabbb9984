"""``citylake sync``: ship an edge's lake to its region (push) and receive it there (serve)."""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from types import FrameType
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.config.exposure import OpenBindRefused, check_exposure, is_loopback
from citylake.config.models import SyncConfig
from citylake.schemas import DataLayout
from citylake.sync.credentials import CredentialsError, region_keys
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

log = logging.getLogger(__name__)

app = typer.Typer(help="Edge → region → centre sync of the lake.", no_args_is_help=True)


@app.command()
def serve(
    config: ConfigOption = DEFAULT_CONFIG,
    host: Annotated[str | None, typer.Option(help="listen address (default sync.host)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (default sync.port)")] = None,
    allow_open: Annotated[
        bool,
        typer.Option("--allow-open", help="serve without site keys off loopback (sync.allow_open)"),
    ] = False,
) -> None:
    """Region or centre: receive edges' (or regions') lake files into this site's lake, verified by sha256."""
    setup_logging()
    loaded = load(config)
    settings = loaded.config.sync
    bind = host or settings.host
    try:
        keys = region_keys(settings)
        check_exposure(
            "citylake sync serve",
            bind,
            protected=not keys.open or settings.tls_client_ca_file is not None,
            allow_open=allow_open or settings.allow_open,
            how_to_protect="sync.site_keys (or sync.keys_file) with a key per edge site",
        )
    except (OpenBindRefused, CredentialsError) as exc:
        fail(str(exc))
    if settings.tls_cert_file is None and not is_loopback(bind):
        log.warning(
            "sync serve on %s without TLS: keys and lake files cross the network in clear; set "
            "sync.tls_cert_file and sync.tls_key_file, or keep it behind a mesh with mTLS",
            bind,
        )
    app_ = create_app(ReceiverSettings(loaded.config.data_dir, settings, loaded.config.site))
    scheme = "https" if settings.tls_cert_file else "http"
    console.print(
        f"sync receiver of {loaded.config.site} on {scheme}://{bind}:{port or settings.port}/v1/sync/sites/…"
    )
    for region, sites in sorted(settings.regions.items()):
        console.print(f"region {region} may write for {', '.join(sites) or 'itself only'}")
    uvicorn.run(app_, host=bind, port=port or settings.port, log_level="warning", **_tls(settings))


def _tls(settings: SyncConfig) -> dict[str, Any]:
    """uvicorn's TLS options from sync.tls_*; a client CA makes the region ask for client certificates."""
    if settings.tls_cert_file is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_keyfile": str(settings.tls_key_file),
    }
    if settings.tls_client_ca_file is not None:
        options |= {"ssl_ca_certs": str(settings.tls_client_ca_file), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    return options


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _print(report: PushReport, totals: Counters | None = None) -> None:
    c = totals or report.counters
    table = Table(
        "site",
        "in sync",
        "lake",
        "sites",
        "uploaded",
        "sent",
        "resumed",
        "metadata",
        "commits",
        "in / out",
        "rate",
    )
    table.add_row(
        report.site,
        "yes" if report.in_sync else "no",
        f"{report.lake_files} files, {_size(report.lake_bytes)}",
        ", ".join(f"{origin} {files}" for origin, files in report.origins.items()),
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
    """Edge or region: ship the lake files the next tier lacks (resumable, paced, verified); --follow."""
    setup_logging()
    loaded = load(config)
    settings = loaded.config.sync
    url = region_url or settings.region_url
    if not url:
        fail("no region to push to: set sync.region_url in the config or pass --region-url", code=2)
    layout = DataLayout(loaded.config.data_dir)
    timeout = httpx.Timeout(settings.timeout_s, connect=min(settings.timeout_s, 10.0))
    # An https region is verified against sync.region_ca_file (a private CA) or the system's CAs.
    verify: ssl.SSLContext | bool = True
    if settings.region_ca_file is not None:
        verify = ssl.create_default_context(cafile=str(settings.region_ca_file))
    with httpx.Client(base_url=url, timeout=timeout, verify=verify) as client:
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
