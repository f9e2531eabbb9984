"""``devices`` rows for devices a source's config names (Modbus slaves, OPC UA
devices): what ``Source.known_devices`` returns and the runner lands at start."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from citylake.config import DeviceMetadata
from citylake.ingest.base import Row


def configured_device_row(
    device_id: str,
    protocol: str,
    metadata: DeviceMetadata | None,
    attributes: Mapping[str, object],
    now_ms: int,
) -> Row:
    """One device as configured. ``first_seen``/``last_seen`` are the time
    ingest started with this config: when citylake first knew of the device,
    before it answers (its readings then say when it was last heard)."""
    meta = metadata or DeviceMetadata()
    return {
        "device_id": device_id,
        "name": meta.name,
        "type": meta.device_type,
        "protocol": protocol,
        "civil_code": meta.civil_code,
        "district": meta.district,
        "address": meta.address,
        "longitude": meta.longitude,
        "latitude": meta.latitude,
        "attributes": json.dumps(dict(attributes), sort_keys=True) if attributes else None,
        "first_seen": now_ms,
        "last_seen": now_ms,
    }


def without_credentials(url: str) -> str:
    """An endpoint as ``devices`` and the registry show it: a password in a URL must not be."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
