"""The jars PyFlink jobs load beyond the apache-flink wheel (see flink-jars.pom.xml)."""

from __future__ import annotations

import os
from pathlib import Path


class FlinkJarsMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    configured = os.environ.get("CITYLAKE_CACHE")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent / ".cache"


def flink_version() -> str:
    from pyflink.version import __version__

    return str(__version__)


def pipeline_jars() -> list[Path]:
    directory = cache_dir() / "flink-jars" / flink_version()
    jars = sorted(directory.glob("*.jar"))
    if not (directory / ".complete").exists() or not jars:
        raise FlinkJarsMissing(
            f"Flink connector jars not found in {directory}; run `make setup` "
            "(tools/setup/flink-jars.sh fetches them with Maven)"
        )
    return jars
