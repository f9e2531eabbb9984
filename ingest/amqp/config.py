"""The keys of a ``type: amqp`` source."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


class AmqpBinding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exchange: str = Field(min_length=1, description="an existing exchange to bind the queue to")
    routing_key: str = Field(default="#", description="binding key (topic exchanges: * and #)")


class AmqpQueue(BaseModel):
    """One queue to consume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str = Field(min_length=1, max_length=255, description="the queue name")
    declare: bool = Field(
        default=False,
        description="false: the queue must exist (another platform owns it); true: declare it durable",
    )
    bindings: list[AmqpBinding] = Field(default_factory=list, description="bind it to these exchanges")
    routing_key_template: str | None = Field(
        default=None,
        description="dot-separated levels with {name} segments, e.g. city.{district}.{device_id}.telemetry: "
        "ids taken from each message's routing key",
    )
    device_id: str | None = Field(default=None, description="a fixed device id for every message")

    @field_validator("routing_key_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        names = []
        for level in value.split("."):
            match = _PLACEHOLDER.match(level)
            if match is None and ("{" in level or "}" in level or level in ("*", "#")):
                raise ValueError(
                    f"routing_key_template {value!r}: level {level!r} must be a word or a whole {{name}}"
                )
            if match:
                names.append(match.group(1))
        if len(set(names)) != len(names):
            raise ValueError(f"routing_key_template {value!r}: a placeholder is used twice")
        return value


class AmqpSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["amqp"] = "amqp"
    url: str = Field(description="amqp://user:password@host:5672/vhost (amqps:// for TLS)")
    queues: list[AmqpQueue] = Field(min_length=1, description="what to consume")
    prefetch: int = Field(
        default=1000, ge=1, le=65535,
        description="unacknowledged deliveries the broker sends ahead: the backpressure window",
    )  # fmt: skip
    dead_letter_exchange: str | None = Field(
        default=None,
        description="bad messages are published here (with x-citylake-reason) before they are acked; "
        "unset: they are rejected without requeue (the queue's own DLX, if any, takes them)",
    )
    timestamp_field: str = Field(default="ts", description="payload key holding the event time")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")
    devices: dict[str, DeviceMetadata] = Field(
        default_factory=dict, description="how devices appear in `devices`"
    )
    max_message_bytes: int = Field(default=1024 * 1024, ge=64, description="larger bodies are rejected")
    max_devices: int = Field(default=100_000, ge=1, description="devices remembered for first sight (LRU)")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30, gt=0)

    @field_validator("url")
    @classmethod
    def _amqp(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"expected amqp://user:password@host:port/vhost, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AmqpSourceConfig:
        names = [q.queue for q in self.queues]
        if len(set(names)) != len(names):
            raise ValueError("a queue is configured twice")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self
