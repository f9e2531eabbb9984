"""The keys of a ``type: coap`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.http_push.config import HttpPushSourceConfig


def parse_coap_url(value: str) -> tuple[str, int]:
    parts = urlsplit(value)
    if parts.scheme != "coap" or not parts.hostname:
        raise ValueError(f"expected coap://host:port, got {value!r} (coaps:// DTLS is not supported)")
    return parts.hostname, parts.port or 5683


class CoapResource(BaseModel):
    """One observable resource on a device (observe mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1, description="readings.device_id of what it reports")
    path: str = Field(description="the resource path on the device, e.g. /sensors/temp")
    url: str | None = Field(
        default=None, description="coap://host:port of the device; default: the source url"
    )
    metric: str | None = Field(default=None, description="text/plain payloads: the metric of the number")
    unit: str | None = Field(default=None, description="text/plain payloads: its unit")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "?" in value or "#" in value:
            raise ValueError(f"path {value!r} must start with / (no query)")
        return value

    @field_validator("url")
    @classmethod
    def _coap(cls, value: str | None) -> str | None:
        if value is not None:
            parse_coap_url(value)
        return value


class CoapSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["coap"] = "coap"
    url: str = Field(description="observe: coap://host:port of the devices; server: where to listen")
    mode: Literal["observe", "server"] = Field(
        default="observe", description="observe: we observe resources; server: devices POST/PUT to us"
    )
    resources: list[CoapResource] = Field(default_factory=list, description="observe mode: what to observe")
    path: str = Field(
        default="/telemetry/{device_id}",
        description="server mode: request path; {name} segments become ids, as for http_push",
    )
    devices: dict[str, DeviceMetadata] = Field(
        default_factory=dict, description="device_id -> name, device_type, ...: how it appears in `devices`"
    )
    timestamp_field: str = Field(default="ts", description="JSON/CBOR payloads: the event-time key")
    timestamp_unit: Literal["ms", "s", "iso8601"] = "ms"
    units: dict[str, str] = Field(default_factory=dict, description="JSON/CBOR payloads: metric -> unit")
    max_payload_bytes: int = Field(default=64 * 1024, ge=16, description="larger payloads are rejected")
    max_records: int = Field(default=1000, ge=1, description="SenML records per payload")
    timeout_s: float = Field(default=5, gt=0, description="observe: wait for the registration's answer")
    reobserve_min_s: float = Field(default=0.5, gt=0, description="first wait before observing again")
    reobserve_max_s: float = Field(default=30, gt=0, description="cap of the doubling wait")
    ack_timeout_s: float = Field(default=10, gt=0, description="server: answer 5.03 if not durable by then")
    max_devices: int = Field(default=100_000, ge=1, description="server: devices remembered (LRU)")
    max_rejects_per_s: float = Field(default=20, gt=0, description="server: rejects landed per second")

    @field_validator("url")
    @classmethod
    def _coap_url(cls, value: str) -> str:
        parse_coap_url(value)
        return value

    @field_validator("path")
    @classmethod
    def _template(cls, value: str) -> str:
        # The same {name}-segment rules as http_push's path.
        return HttpPushSourceConfig._path_template(value)

    @model_validator(mode="after")
    def _consistent(self) -> CoapSourceConfig:
        if self.mode == "observe" and not self.resources:
            raise ValueError("mode observe needs resources to observe")
        if self.mode == "server" and self.resources:
            raise ValueError("resources are observed only in mode observe; a server takes pushes at path")
        if self.reobserve_max_s < self.reobserve_min_s:
            raise ValueError("reobserve_max_s must be >= reobserve_min_s")
        seen: set[tuple[str, str]] = set()
        for resource in self.resources:
            key = (resource.url or self.url, resource.path)
            if key in seen:
                raise ValueError(f"resource {key[0]}{key[1]} is configured twice")
            seen.add(key)
        return self

    def url_of(self, resource: CoapResource) -> str:
        host, port = parse_coap_url(resource.url or self.url)
        return f"coap://{host}:{port}{resource.path}"
