"""``citylake ingest``: run the configured sources into the landing zone."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Iterator
from typing import Annotated

import typer
import uvicorn

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.config import ConfigError
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.batcher import TimeWindow
from citylake.ingest.live import LivePublisher
from citylake.ingest.registry import build_sources
from citylake.ingest.runner import FlushPolicy, IngestRunner
from citylake.schemas import DataLayout


def ingest(
    config: ConfigOption = DEFAULT_CONFIG,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="only these sources")] = None,
    check: Annotated[bool, typer.Option("--check", help="try each source's connection and exit")] = False,
    metrics_port: Annotated[int, typer.Option(help="port for /healthz and Prometheus /metrics; 0 = off")] = 0,
    metrics_host: Annotated[
        str,
        typer.Option(help="address of that server; 0.0.0.0 where Prometheus scrapes from outside (a pod)"),
    ] = "127.0.0.1",
) -> None:
    """Receive from every configured source and land the data durably."""
    setup_logging()
    loaded = load(config)
    try:
        sources = build_sources(loaded, set(source) if source else None)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if not sources:
        fail("no enabled sources in the config (sources: [...] is empty or filtered out)", code=2)
    if check:
        asyncio.run(_check(sources))
        return
    settings = loaded.config.ingest
    policy = FlushPolicy(
        max_rows=settings.flush_max_rows,
        max_age_s=settings.flush_max_age_s,
        max_buffered_rows=settings.max_buffered_rows,
        max_landing_bytes=settings.landing_max_bytes,
        max_metric_types=settings.metric_types_max,
        window=TimeWindow(
            None if settings.accept_past_days is None else int(settings.accept_past_days * 86_400_000),
            None if settings.accept_future_s is None else int(settings.accept_future_s * 1000),
        ),
        reject_rate_per_s=settings.reject_rate_per_s,
        reject_burst=settings.reject_burst,
    )
    live = _live_publisher(settings.live_pubsub, settings.live_topic)
    runner = IngestRunner(sources, DataLayout(loaded.config.data_dir), loaded.config.site, policy, live=live)
    names = ", ".join(f"{s.name} ({s.config.type})" for s in sources)
    console.print(f"ingesting from {names} into {loaded.config.data_dir / 'landing'}; Ctrl-C stops")
    if metrics_port:
        console.print(f"health and metrics: http://{metrics_host}:{metrics_port}/healthz  /metrics")
    asyncio.run(_run(runner, metrics_host, metrics_port))


def _live_publisher(pubsub: str | None, topic: str) -> LivePublisher | None:
    if pubsub is None:
        return None
    port = os.environ.get("DAPR_HTTP_PORT")
    if not port or not port.isdigit():
        fail(
            f"ingest.live_pubsub is {pubsub!r} but DAPR_HTTP_PORT is not set: "
            "run ingest beside a Dapr sidecar",
            2,
        )
    console.print(f"live feed: landed readings published to Dapr pub/sub {pubsub!r}, topic {topic!r}")
    return LivePublisher(int(port), pubsub, topic, api_token=os.environ.get("DAPR_API_TOKEN"))


class _OpsServer(uvicorn.Server):
    """uvicorn inside the ingest loop: the loop, not uvicorn, owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _run(runner: IngestRunner, http_host: str, http_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if http_port:
        from citylake.ingest.ops import create_ops_app

        config = uvicorn.Config(create_ops_app(runner), host=http_host, port=http_port, log_level="warning")
        server = _OpsServer(config)
        serving = asyncio.create_task(server.serve())
    try:
        await runner.start()
        # Everything allocated at start-up lives as long as the process; frozen,
        # the collector stops rescanning it (full collections of 30-55 ms were
        # the worst poll lateness at 1,000 Modbus devices).
        gc.freeze()
        await stop.wait()
    finally:
        await runner.stop()
        if server is not None:
            server.should_exit = True
            await serving


async def _check(sources: list) -> None:  # type: ignore[type-arg]
    failed = 0
    for src in sources:
        try:
            await src.check()
            console.print(f"[green]ok[/]   {src.name}")
        except SourceUnavailable as exc:
            failed += 1
            console.print(f"[red]fail[/] {src.name}: {exc}")
    if failed:
        raise typer.Exit(1)
