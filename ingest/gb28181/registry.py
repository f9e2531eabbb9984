"""In-memory state of the devices registered with the platform.

Pure: every method takes ``now`` (epoch ms) and returns the events it caused,
so the adapter decides how they leave and tests drive time by hand. A device
is online from a successful REGISTER until it unregisters, its registration
expires, or ``missed_keepalives`` x interval pass without a keepalive (counted
from the last keepalive, or from the REGISTER before the first one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from citylake.ingest.gb28181.device_id import parse_device_id
from citylake.ingest.gb28181.peer import Peer


@dataclass(frozen=True)
class Event:
    """One ``device_events`` row to be: what happened, to whom, when."""

    device_id: str
    ts: int
    kind: str
    attributes: dict[str, Any]


@dataclass
class Registration:
    device_id: str
    transport: str
    addr: tuple[str, int]
    contact: str
    call_id: str
    expires_at: int
    registered_at: int
    last_keepalive: int | None = None
    online: bool = True

    @property
    def peer(self) -> Peer:
        """Where the device registered from: its MESSAGEs must come from there."""
        return Peer(self.transport, self.addr)


@dataclass
class DeviceRecord:
    """Latest known metadata of a device or channel: one ``devices`` row."""

    device_id: str
    type: str | None = None
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    parent_id: str | None = None
    civil_code: str | None = None
    address: str | None = None
    longitude: float | None = None
    latitude: float | None = None
    status: str | None = None
    first_seen: int | None = None
    last_seen: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The registered device whose catalog named this channel: only it may
    # file data under the channel's id or rewrite its record (not landed).
    owner: str | None = None

    def row(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "name": self.name,
            "type": self.type,
            "protocol": "gb28181",
            "manufacturer": self.manufacturer,
            "model": self.model,
            "parent_id": self.parent_id,
            "civil_code": self.civil_code,
            "address": self.address,
            "longitude": self.longitude,
            "latitude": self.latitude,
            "status": self.status,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
        }


class Registry:
    def __init__(
        self, keepalive_interval_s: float, missed_keepalives: int, max_records: int = 100_000
    ) -> None:
        self.keepalive_timeout_ms = int(keepalive_interval_s * missed_keepalives * 1000)
        self.registrations: dict[str, Registration] = {}
        # Insertion order is recency order (record() moves a record to the end),
        # so the bound forgets the least recently seen unregistered one.
        self.records: dict[str, DeviceRecord] = {}
        self.max_records = max_records
        self.evicted = 0

    def record(self, device_id: str, now: int) -> DeviceRecord:
        """The record of ``device_id``, created (decoded from its id) when new."""
        found = self.records.pop(device_id, None)
        if found is not None:
            self.records[device_id] = found
        else:
            self._make_room()
            try:
                decoded = parse_device_id(device_id)
                type_name: str | None = decoded.type_name
                civil: str | None = decoded.civil_code
            except ValueError:
                type_name, civil = None, None
            found = DeviceRecord(device_id, type=type_name, civil_code=civil, first_seen=now)
            self.records[device_id] = found
        found.last_seen = now
        return found

    def _make_room(self) -> None:
        # Registered devices are kept (their number has its own bound): moved
        # to the back, they cost one step each at most once per pass.
        for _ in range(len(self.records)):
            if len(self.records) < self.max_records:
                return
            oldest = next(iter(self.records))
            record = self.records.pop(oldest)
            if oldest in self.registrations:
                self.records[oldest] = record
            else:
                self.evicted += 1

    def children_of(self, device_id: str, child_id: str) -> bool:
        """Whether ``child_id`` is a channel the catalog of ``device_id`` named."""
        found = self.records.get(child_id)
        return found is not None and found.owner == device_id

    def is_registered(self, device_id: str) -> bool:
        return device_id in self.registrations

    def online_count(self) -> int:
        return sum(1 for r in self.registrations.values() if r.online)

    def register(
        self,
        device_id: str,
        transport: str,
        addr: tuple[str, int],
        contact: str,
        call_id: str,
        expires_s: int,
        now: int,
    ) -> tuple[list[Event], bool]:
        """(events, first): ``first`` is true for a new registration (not a refresh)."""
        current = self.registrations.get(device_id)
        first = current is None
        attributes: dict[str, Any] = {
            "expires": expires_s,
            "transport": transport,
            "address": f"{addr[0]}:{addr[1]}",
            "refresh": not first,
        }
        events = [Event(device_id, now, "register", attributes)]
        if current is None:
            current = Registration(device_id, transport, addr, contact, call_id, 0, now)
            self.registrations[device_id] = current
        current.transport, current.addr, current.contact, current.call_id = transport, addr, contact, call_id
        current.expires_at = now + expires_s * 1000
        if not current.online:
            # A refresh brings back a device that went quiet: count anew.
            current.registered_at = now
            current.last_keepalive = None
        if not current.online or first:
            current.online = True
            events.append(Event(device_id, now, "online", {"reason": "registered"}))
        record = self.record(device_id, now)
        record.status = "online"
        return events, first

    def unregister(self, device_id: str, now: int) -> list[Event]:
        current = self.registrations.pop(device_id, None)
        events = [Event(device_id, now, "unregister", {})]
        if current is not None and current.online:
            events.append(Event(device_id, now, "offline", {"reason": "unregistered"}))
        self.record(device_id, now).status = "offline"
        return events

    def keepalive(self, device_id: str, now: int, status: str | None) -> list[Event]:
        current = self.registrations[device_id]
        current.last_keepalive = now
        events = [Event(device_id, now, "keepalive", {"status": status})]
        if not current.online:
            current.online = True
            self.record(device_id, now).status = "online"
            events.append(Event(device_id, now, "online", {"reason": "keepalive"}))
        return events

    def sweep(self, now: int) -> list[Event]:
        """Offline transitions due at ``now``: expired registrations (dropped:
        the device must REGISTER again) and devices past the keepalive timeout."""
        events: list[Event] = []
        for device_id, current in list(self.registrations.items()):
            if current.expires_at <= now:
                del self.registrations[device_id]
                if current.online:
                    events.append(Event(device_id, now, "offline", {"reason": "registration expired"}))
                    self.record(device_id, now).status = "offline"
                continue
            last = current.last_keepalive if current.last_keepalive is not None else current.registered_at
            if current.online and now - last > self.keepalive_timeout_ms:
                current.online = False
                self.record(device_id, now).status = "offline"
                events.append(
                    Event(
                        device_id,
                        now,
                        "offline",
                        {"reason": "missed keepalives", "last_keepalive_ms": last},
                    )
                )
        return events
