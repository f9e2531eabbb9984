"""Devices that ``city.yaml`` names: Modbus slaves and OPC UA nodes.

Each source is validated by its adapter's own config model (the single source
of truth for its keys), imported without the adapter, so the registry never
loads pymodbus or asyncua. MQTT, GB28181 and HTTP push sources name no devices:
their ids arrive in topics, SIP messages and request paths, and the registry
learns them from the lake (``devices``, ``device_events``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from citylake.config import ConfigError, LoadedConfig
from citylake.ingest.configured_devices import without_credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfiguredDevice:
    device_id: str
    protocol: str
    source: str
    attributes: dict[str, Any] = field(default_factory=dict)


def _modbus(loaded: LoadedConfig, index: int, raw: dict[str, Any]) -> Iterable[ConfiguredDevice]:
    from citylake.ingest.modbus.config import ModbusSourceConfig

    source = loaded.document.validate(ModbusSourceConfig, raw, prefix=("sources", index))
    for device in source.devices:
        yield ConfiguredDevice(
            device_id=device.device_id,
            protocol="modbus",
            source=source.name,
            attributes={
                "endpoint": source.endpoint_of(device).key,
                "slave_id": device.slave_id,
                "interval_s": device.interval_s or source.interval_s,
                "profile": device.profile,
                "metrics": [f.name for f in device.register_fields],
                "enabled": source.enabled,
            },
        )


def _opcua(loaded: LoadedConfig, index: int, raw: dict[str, Any]) -> Iterable[ConfiguredDevice]:
    from citylake.ingest.opcua.config import OpcUaSourceConfig

    source = loaded.document.validate(OpcUaSourceConfig, raw, prefix=("sources", index))
    metrics: dict[str, list[str]] = {}
    for node in source.nodes:
        metrics.setdefault(node.device_id, []).append(node.metric)
    for device_id, names in metrics.items():
        yield ConfiguredDevice(
            device_id=device_id,
            protocol="opcua",
            source=source.name,
            attributes={
                "endpoint": without_credentials(source.url),
                "metrics": names,
                "enabled": source.enabled,
            },
        )


_READERS: dict[str, Callable[[LoadedConfig, int, dict[str, Any]], Iterable[ConfiguredDevice]]] = {
    "modbus": _modbus,
    "opcua": _opcua,
}


def configured_devices(loaded: LoadedConfig) -> list[ConfiguredDevice]:
    """Every device a source names, first source first. A source whose keys do
    not validate is skipped with a warning: ingest refuses it with the same
    message, and the registry still serves everything else."""
    devices: list[ConfiguredDevice] = []
    for index, raw in loaded.source_data():
        reader = _READERS.get(loaded.config.sources[index].type)
        if reader is None:
            continue
        try:
            devices.extend(reader(loaded, index, raw))
        except ConfigError as exc:
            log.warning("registry: skipping the devices of an invalid source: %s", exc)
    return devices


def source_protocols(loaded: LoadedConfig) -> dict[str, str]:
    """Source name -> adapter type: ``device_events.source`` holds the name."""
    return {source.name: source.type for source in loaded.config.sources}
