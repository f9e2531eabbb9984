"""The keys of a ``type: kafka`` source."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig

_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def bootstrap_servers(url: str) -> str:
    """``kafka://h1:9092,h2:9092`` as librdkafka's ``bootstrap.servers``."""
    parts = urlsplit(url)
    if parts.scheme not in ("kafka", "kafka+ssl") or not parts.netloc:
        raise ValueError(f"expected kafka://host:port[,host:port...], got {url!r}")
    servers = parts.netloc.rsplit("@", 1)[-1]
    for server in servers.split(","):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broker {server!r} in {url!r}: give host:port")
    return servers


class KafkaSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["kafka"] = "kafka"
    url: str = Field(description="kafka://host:9092[,host:9092] (kafka+ssl:// for TLS)")
    topics: list[str] = Field(min_length=1, description="topics to consume")
    group_id: str = Field(min_length=1, description="the consumer group; offsets are committed for it")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="where a group without committed offsets starts"
    )
    device_id_from_key: bool = Field(
        default=True, description="a message key is the device id when the payload has none"
    )
    timestamp_field: str = Field(default="ts", description="payload key holding the event time")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")
    devices: dict[str, DeviceMetadata] = Field(
        default_factory=dict, description="how devices appear in `devices`"
    )
    max_message_bytes: int = Field(default=1024 * 1024, ge=64, description="larger values are rejected")
    batch_size: int = Field(default=500, ge=1, le=100_000, description="messages taken per consume call")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: str | None = None
    max_devices: int = Field(default=100_000, ge=1, description="devices remembered for first sight (LRU)")

    @field_validator("url")
    @classmethod
    def _kafka(cls, value: str) -> str:
        bootstrap_servers(value)
        return value

    @field_validator("topics")
    @classmethod
    def _topic_names(cls, value: list[str]) -> list[str]:
        for topic in value:
            if not _TOPIC.match(topic):
                raise ValueError(f"topic {topic!r}: letters, digits, '.', '_' and '-' only (Kafka's rule)")
        if len(set(value)) != len(value):
            raise ValueError("a topic is configured twice")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSourceConfig:
        given = [self.sasl_mechanism is not None, self.username is not None, self.password is not None]
        if any(given) and not all(given):
            raise ValueError("SASL needs sasl_mechanism, username and password together")
        return self
