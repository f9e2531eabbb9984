"""What every command shares: the --config option, config errors, logging."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler

from citylake.config import ConfigError, LoadedConfig, load_config

console = Console(stderr=True)

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", "-c", envvar="CITYLAKE_CONFIG", help="city.yaml describing sources, lake and services"
    ),
]
DEFAULT_CONFIG = Path("city.yaml")


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("CITYLAKE_LOG_LEVEL", "INFO"))
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=True)],
        force=True,
    )
    for noisy in ("py4j", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def load(path: Path) -> LoadedConfig:
    """The config, or exit 2 with every problem and its line."""
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), code=2)


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def not_implemented(command: str, issue: int) -> NoReturn:
    fail(f"`citylake {command}` is not implemented yet (planned in issue {issue}); nothing was done.", code=3)
