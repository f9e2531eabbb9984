"""Adapters by ``type``, from the ``citylake.adapters`` entry-point group.

Entry points are imported only when a source of that type is configured, so a
site that runs only MQTT never imports pymodbus, and a new protocol is one
module plus one ``pyproject.toml`` line: what runs it (``build_sources``) and
what the registry service knows of its devices from the config
(``configured_sources``) both come from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from citylake.config import ConfigError, ConfigProblem, LoadedConfig, SourceConfig
from citylake.ingest.base import Row, Source

GROUP = "citylake.adapters"


def adapter_types() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def adapter_class(type_name: str) -> type[Source]:
    matches = entry_points(group=GROUP, name=type_name)
    if not matches:
        known = ", ".join(adapter_types()) or "none installed"
        raise LookupError(f"no adapter for type {type_name!r} (known: {known})")
    cls = next(iter(matches)).load()
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise TypeError(f"entry point {type_name!r} is {cls!r}, not a citylake Source")
    return cls


def build_sources(loaded: LoadedConfig, only: set[str] | None = None) -> list[Source]:
    """One adapter per enabled source, each validated against its own model;
    every problem in every source is reported at once, with file lines."""
    sources: list[Source] = []
    problems: list[ConfigProblem] = []
    document = loaded.document
    for index, raw in loaded.source_data():
        base = loaded.config.sources[index]
        if not base.enabled or (only is not None and base.name not in only):
            continue
        try:
            cls = adapter_class(base.type)
        except LookupError as exc:
            problems.append(
                ConfigProblem(
                    f"sources[{index}].type", document.line_of(("sources", index, "type")), str(exc)
                )
            )
            continue
        try:
            config = document.validate(cls.config_model, raw, prefix=("sources", index))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        source = cls(config)
        for message in source.validate():
            problems.append(ConfigProblem(f"sources[{index}]", document.line_of(("sources", index)), message))
        sources.append(source)
    if problems:
        raise ConfigError(document.path, problems)
    return sources


@dataclass(frozen=True)
class ConfiguredSource:
    """A source of ``city.yaml`` (enabled or not) and the ``devices`` rows its
    adapter type's ``configured_devices`` gives for it."""

    config: SourceConfig
    devices: Sequence[Row]


def configured_sources(loaded: LoadedConfig, now_ms: int) -> tuple[list[ConfiguredSource], list[str]]:
    """(every source whose adapter is installed and whose keys validate, first
    first; a problem for each of the others). Builds no source: the adapter
    type answers from its validated config alone."""
    found: list[ConfiguredSource] = []
    problems: list[str] = []
    document = loaded.document
    for index, raw in loaded.source_data():
        base = loaded.config.sources[index]
        try:
            cls = adapter_class(base.type)
            config = document.validate(cls.config_model, raw, prefix=("sources", index))
        except (LookupError, TypeError, ConfigError) as exc:
            problems.append(f"sources[{index}] ({base.name}): {exc}")
            continue
        found.append(ConfiguredSource(config, cls.configured_devices(config, now_ms)))
    return found, problems
