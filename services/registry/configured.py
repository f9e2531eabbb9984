"""Devices that ``city.yaml`` names, as each source's adapter says.

The registry keeps no table of protocols: for every configured source it asks
the adapter type installed for it (``citylake.ingest.registry``, the
``citylake.adapters`` entry points) which devices the source's config names
(``Source.configured_devices``, validated by the adapter's own config model,
the single source of truth for its keys). A new protocol is known here the
moment its entry point is. Sources whose ids arrive with the data (topics,
signalling, request paths) name none; the registry learns those from the lake
(``devices``, ``device_events``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from citylake.config import LoadedConfig
from citylake.ingest.registry import configured_sources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfiguredDevice:
    device_id: str
    protocol: str
    source: str
    attributes: dict[str, Any] = field(default_factory=dict)


def configured_devices(loaded: LoadedConfig) -> list[ConfiguredDevice]:
    """Every device a source names, first source first. A source whose keys do
    not validate (or whose adapter is not installed) is skipped with a
    warning: ingest refuses it with the same message, and the registry still
    serves everything else."""
    sources, problems = configured_sources(loaded, now_ms=0)
    for problem in problems:
        log.warning("registry: skipping the devices of an invalid source: %s", problem)
    devices: list[ConfiguredDevice] = []
    for source in sources:
        for row in source.devices:
            text = row.get("attributes")
            attributes: dict[str, Any] = json.loads(str(text)) if text else {}
            attributes.pop("source", None)  # the device's own field below
            attributes["enabled"] = source.config.enabled
            devices.append(
                ConfiguredDevice(
                    device_id=str(row["device_id"]),
                    protocol=str(row["protocol"]),
                    source=source.config.name,
                    attributes=attributes,
                )
            )
    return devices


def source_protocols(loaded: LoadedConfig) -> dict[str, str]:
    """Source name -> adapter type: ``device_events.source`` holds the name."""
    return {source.name: source.type for source in loaded.config.sources}
