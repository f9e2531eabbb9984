"""The keys of an ``type: mqtt`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import SourceConfig


class TopicMapping(BaseModel):
    """One subscription and how its topics and payloads become rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(
        description="topic with {placeholders}, e.g. city/{district}/{device_type}/{device_id}/telemetry; "
        "{device_id} is required unless payloads carry a device_id field"
    )
    payload: Literal["json"] = "json"
    timestamp_field: str = Field(default="ts", description="payload key holding the event time")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="metric -> unit")

    @field_validator("template")
    @classmethod
    def _template_is_a_topic(cls, value: str) -> str:
        from citylake.ingest.mqtt.codec import TopicTemplate

        TopicTemplate(value)  # raises ValueError naming the problem
        return value


class MqttSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mqtt"] = "mqtt"
    topics: list[TopicMapping] = Field(default_factory=list, description="JSON telemetry topics")
    sparkplug_groups: list[str] = Field(
        default_factory=list, description="Sparkplug B group ids to subscribe to (spBv1.0/<group>/#)"
    )
    qos: Literal[0, 1] = Field(default=1, description="1: acknowledged only once durable")
    client_id: str | None = Field(
        default=None, description="fixed id for a persistent session; default citylake-<site>-<name>"
    )
    clean_session: bool = Field(default=False, description="false keeps the session across restarts")
    shared_group: str | None = Field(
        default=None, description="subscribe as $share/<group>/... so processes split the stream"
    )
    username: str | None = None
    password: str | None = None
    ca_file: str | None = Field(default=None, description="CA bundle for mqtts:// brokers")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=256 * 1024, ge=64)
    sparkplug_max_aliases: int = Field(
        default=1_000_000,
        ge=1,
        description="Sparkplug B metric aliases remembered from BIRTHs, all edge nodes together; beyond, the "
        "least recently heard node's are forgotten (sparkplug_aliases_evicted) until its next BIRTH",
    )
    known_devices_max: int = Field(
        default=100_000,
        ge=1,
        description="devices remembered to land a `devices` row only on first sight and on change; "
        "beyond, the least recently heard is forgotten (counted as known_devices_evicted)",
    )

    @model_validator(mode="after")
    def _something_to_subscribe(self) -> MqttSourceConfig:
        if not self.topics and not self.sparkplug_groups:
            raise ValueError("give topics (JSON telemetry) or sparkplug_groups (Sparkplug B), or both")
        return self

    @field_validator("url")
    @classmethod
    def _mqtt_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no broker host in {value!r}")
        return value
