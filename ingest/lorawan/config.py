"""The keys of a ``type: lorawan`` source: ChirpStack's MQTT integration on a broker.

The broker keys (url, qos, client_id, clean_session, shared_group, username,
password, ca_file, keepalive_s, reconnect_*, max_payload_bytes,
known_devices_max) are the MQTT source's: the transport is
``ingest/mqtt``'s, only the topics and payloads are ChirpStack's.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from citylake.ingest.mqtt.config import MqttSourceConfig

_APP_ID = re.compile(r"^(\+|[0-9A-Za-z-]{1,64})$")


class LorawanSourceConfig(MqttSourceConfig):
    type: Literal["lorawan"] = "lorawan"  # type: ignore[assignment]
    application_ids: list[str] = Field(
        default_factory=lambda: ["+"], min_length=1, max_length=256,
        description="ChirpStack application ids (UUIDs) to subscribe to; + for all",
    )  # fmt: skip
    units: dict[str, str] = Field(
        default_factory=dict, description="decoded object field -> unit, e.g. temperature: Cel"
    )
    link_metrics: bool = Field(
        default=True, description="also land lora_rssi and lora_snr of the best gateway"
    )
    fcnt_window: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="recent frame counters kept per device to drop a repeated uplink",
    )

    @model_validator(mode="after")
    def _something_to_subscribe(self) -> LorawanSourceConfig:
        # Replaces the MQTT source's check (same name): the topics are ChirpStack's.
        if self.topics or self.sparkplug_groups:
            raise ValueError(
                "a lorawan source subscribes to ChirpStack's topics itself: drop topics/sparkplug_groups"
            )
        return self

    @field_validator("application_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for app in value:
            if not _APP_ID.fullmatch(app):
                raise ValueError(f"application id {app!r}: a ChirpStack application UUID or +")
        return value
