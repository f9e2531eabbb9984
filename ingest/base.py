"""The adapter interface: what a protocol module implements and what it gets.

Two lifecycles, as Telegraf separates inputs from service inputs:

- ``StreamingSource``: the protocol pushes (MQTT, GB28181, HTTP). ``start()``
  connects or listens, ``stop()`` lets go.
- ``PollingSource``: citylake asks on an interval (Modbus, SNMP). ``poll()``
  reads once; the runner schedules it.

Both get a ``SourceContext``: the only way rows leave an adapter. An adapter
translates protocol to rows and nothing else; batching, validation, landing,
acknowledgement and metrics live once, in the runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, Protocol, TypeVar

from citylake.config import SourceConfig
from citylake.schemas import TableSpec

Row = Mapping[str, object]
Ack = Callable[[], None]
C = TypeVar("C", bound=SourceConfig)


def config_as(config: SourceConfig, model: type[C]) -> C:
    """``config`` as the adapter's own model (what ``configured_devices`` of
    that adapter takes); a config of another type is a ``TypeError``."""
    if not isinstance(config, model):
        raise TypeError(f"expected a {model.__name__}, got a {type(config).__name__} ({config.type})")
    return config


class SourceContext(Protocol):
    """What an adapter may do with what it received. Thread-safe: protocol
    libraries that run their own network thread (paho) call it from there."""

    @property
    def source(self) -> str: ...

    @property
    def site(self) -> str: ...

    def emit(
        self,
        table: TableSpec,
        rows: Sequence[Row],
        raw: bytes,
        ack: Ack | None = None,
        input_id: str | None = None,
    ) -> None:
        """Hand over rows decoded from one input (``raw``). Invalid rows go to
        ``rejected`` with ``raw``; ``ack`` runs once everything handed over so far
        is durable in the landing zone. ``input_id`` (unique per delivery, stable
        across redelivery) is recorded with the commit; see ``already_landed``."""

    def emit_columns(
        self,
        table: TableSpec,
        columns: Mapping[str, Sequence[object]],
        count: int,
        raw: bytes,
        ack: Ack | None = None,
        input_id: str | None = None,
    ) -> int:
        """``emit`` for ``count`` rows given as columns: the fast path. Returns
        how many were taken: readings whose metric has the other type are
        rejected at once (see ``metric_types``), so a source that answers its
        sender (HTTP push) can say so."""

    def reject(self, raw: bytes, reason: str, ack: Ack | None = None, input_id: str | None = None) -> None:
        """Record an input that could not be decoded at all."""

    def describe_devices(self, rows: Sequence[Row], raw: bytes) -> None:
        """Hand over ``devices`` rows learnt from an input that is handed over
        (and counted, and acknowledged) with ``emit`` as well: an MQTT topic's
        levels, a Sparkplug birth, a source's config. Validated and landed like
        any rows; not counted as an input of its own."""

    def ready(self) -> bool:
        """False while the landing buffer is full: stop taking input."""

    def already_landed(self, input_id: str) -> bool:
        """True if a redelivered input was landed before a crash lost its
        acknowledgement: acknowledge it again and drop it."""


class Source(ABC):
    """Common to both lifecycles."""

    config_model: ClassVar[type[SourceConfig]]

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    def validate(self) -> list[str]:
        """Problems found without any I/O (the model already checked types)."""
        return []

    def is_up(self) -> bool:
        """Whether the source is connected (or listening) right now."""
        return True

    @classmethod
    def configured_devices(cls, config: SourceConfig, now_ms: int) -> Sequence[Row]:
        """``devices`` rows for what ``config`` (of this adapter's
        ``config_model``) names: id, name, type, protocol, address, coordinates
        where given, and in ``attributes`` how the device is reached and what it
        reports. From the config alone, no I/O: the registry service asks every
        configured source's adapter type, through the entry points, without
        building a source. ``first_seen``/``last_seen`` are ``now_ms``. Sources
        whose ids arrive with the data (topics, SIP, request paths) name none."""
        return []

    def known_devices(self, now_ms: int) -> Sequence[Row]:
        """This source's ``configured_devices``, landed by the runner at start
        so a configured device is in the registry before it first answers."""
        return type(self).configured_devices(self.config, now_ms)

    def counters(self) -> Mapping[str, int]:
        """Monotonic counts the adapter keeps itself (evictions from its own
        bounded tables); the runner exports them as
        ``citylake_ingest_adapter_events{source, event}``."""
        return {}

    @abstractmethod
    async def check(self) -> None:
        """Try the connection once; raise ``SourceUnavailable`` saying what failed."""


class StreamingSource(Source):
    @abstractmethod
    async def start(self, ctx: SourceContext) -> None:
        """Begin receiving; returns once started (delivery continues in background)."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving and release the connection. Idempotent."""


class PollTarget(ABC):
    """One thing polled on its own schedule (a Modbus device, an SNMP agent).
    The runner schedules every target of every polling source on one event
    loop, measures lateness and skips a poll when the previous one still runs
    or the landing buffer is full."""

    name: str
    interval_s: float

    @abstractmethod
    async def poll(self, ctx: SourceContext) -> None:
        """Read once and emit what was read. Errors the protocol reports
        (exceptions, timeouts) are emitted as bad-quality rows or rejects;
        anything raised is counted as a failed poll."""


class PollingSource(Source):
    @abstractmethod
    def targets(self) -> Sequence[PollTarget]:
        """What to poll; fixed for the life of the source."""

    async def open(self) -> None:
        """Prepare shared resources; connections may also open lazily per target."""

    async def close(self) -> None:
        """Release connections; called once when the runner stops."""


class SourceUnavailable(Exception):
    """A source's peer could not be reached; the message says which and why."""
