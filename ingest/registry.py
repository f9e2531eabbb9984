"""Adapters by ``type``, from the ``citylake.adapters`` entry-point group.

Entry points are imported only when a source of that type is configured, so a
site that runs only MQTT never imports pymodbus, and a new protocol is one
module plus one ``pyproject.toml`` line.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from citylake.config import ConfigError, ConfigProblem, LoadedConfig
from citylake.ingest.base import Source

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
