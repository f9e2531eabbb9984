"""The devices a streaming source has told the registry about, bounded.

A source that learns devices from its data (MQTT topic levels, Sparkplug
births) lands a ``devices`` row when a device is first seen and when what it
says about the device changes, not with every message. What it remembers to
decide that is fed from outside (any client may publish under new ids), so it
is an LRU of at most ``max_devices``: a forgotten device is simply "first seen"
again when it next reports, which costs one more ``devices`` row, never a lost
reading.

Only the hash of a description is kept (measured with tracemalloc: 100k MQTT
devices took 47 MB with the descriptions themselves, 25 MB with their
hashes; the default bound is 100k per source). Two different
descriptions of one device with equal 64-bit hashes would miss one change
row: odds of about one in 10^19 per change.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class KnownDevices:
    """device id -> (description, first seen). Not thread-safe: an adapter
    calls it from its one delivery thread."""

    def __init__(self, max_devices: int) -> None:
        if max_devices < 1:
            raise ValueError("max_devices must be at least 1")
        self.max_devices = max_devices
        self._known: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._known

    def observe(self, device_id: str, description: Hashable, now_ms: int) -> int | None:
        """``None`` if ``device_id`` is known with this description; else (first
        sight, or its description changed) the epoch ms of the first sight this
        table remembers, for the ``devices`` row to land. On every message's
        path: no objects built when nothing changed."""
        said = hash(description)
        known = self._known.get(device_id)
        if known is not None:
            self._known.move_to_end(device_id)
            if known[0] == said:
                return None
            self._known[device_id] = (said, known[1])
            return known[1]
        self._known[device_id] = (said, now_ms)
        if len(self._known) > self.max_devices:
            self._known.popitem(last=False)
            self.evictions += 1
        return now_ms
