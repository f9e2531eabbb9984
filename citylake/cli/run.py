"""``citylake run``: everything this site's tier runs, from one city.yaml,
supervised until Ctrl-C (citylake/site/)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from rich.table import Table

from citylake.cli.common import DEFAULT_CONFIG, ConfigOption, console, fail, load, setup_logging
from citylake.site import Supervisor, UnitState, plan_site
from citylake.site.daprd import DaprdNotFound
from citylake.site.health import serve_health


def run(config: ConfigOption = DEFAULT_CONFIG) -> None:
    """Run this site: ingest, streaming jobs, lake maintenance, sync and services (with sidecars)."""
    setup_logging()
    loaded = load(config)
    try:
        plan = plan_site(loaded, config.resolve())
    except (DaprdNotFound, ValueError) as exc:
        fail(str(exc), code=2)
    if not plan.units:
        fail("nothing to run: no sources, no pipelines.jobs, run.maintenance off and no run.services", code=2)
    settings = loaded.config.run
    logs_dir = loaded.config.data_dir / "logs"
    # The sidecars' state stores live here; SQLite will not create the folder.
    (loaded.config.data_dir / "state").mkdir(parents=True, exist_ok=True)

    def changed(name: str, old: UnitState, new: UnitState) -> None:
        colour = {"healthy": "green", "backoff": "red", "unhealthy": "yellow"}.get(new.value, "white")
        console.print(f"  {name}: {old.value} -> [{colour}]{new.value}[/]", highlight=False)

    supervisor = Supervisor(plan, logs_dir, settings, on_change=changed)
    table = Table(title=f"site {plan.site}: {len(plan.units)} units (logs in {logs_dir})")
    for column in ("unit", "kind", "health"):
        table.add_column(column)
    for unit in plan.units:
        table.add_row(unit.name, unit.kind.value, unit.health_url or "while running")
    console.print(table)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = None
    try:
        if settings.health_port:
            server = serve_health(supervisor, settings.health_host, settings.health_port)
            where = f"http://{settings.health_host}:{settings.health_port}"
            console.print(f"site health: {where}/healthz  {where}/metrics")
        supervisor.start()
        for name, url in plan.endpoints.items():
            console.print(f"  {name:<16} {url}", highlight=False)
        console.print("Ctrl-C stops every unit")
        supervisor.run(stop)
    finally:
        console.print("stopping the site")
        supervisor.stop()
        if server is not None:
            server.shutdown()
