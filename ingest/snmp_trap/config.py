"""The keys of a ``type: snmp_trap`` source."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.snmp.auth import UsmUser
from citylake.ingest.snmp.config import parse_udp_url


class TrapAgent(DeviceMetadata):
    """A device that sends traps, and how it is recognised."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device_id: str = Field(min_length=1, description="device_events.device_id of its traps")
    address: str | None = Field(default=None, description="the agent's IP address (v1/v2c traps, or v3)")
    engine_id: str | None = Field(
        default=None, description="v3: the agent's snmpEngineID in hex; wins over the address"
    )

    @field_validator("address")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value))

    @field_validator("engine_id")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return None if value is None else UsmUser(user="x", engine_id=value).engine_id

    @model_validator(mode="after")
    def _recognisable(self) -> TrapAgent:
        if self.address is None and self.engine_id is None:
            raise ValueError(f"agent {self.device_id}: give its address or its engine_id")
        return self


class SnmpTrapSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["snmp_trap"] = "snmp_trap"
    url: str = Field(description="where to listen, udp://0.0.0.0:162")
    communities: list[str] = Field(default_factory=list, description="accepted v1/v2c trap communities")
    users: list[UsmUser] = Field(
        default_factory=list, description="accepted v3 users (with the sender's engine_id for traps)"
    )
    agents: list[TrapAgent] = Field(default_factory=list, description="known senders and their device ids")
    unknown_agents: Literal["accept", "reject"] = Field(
        default="accept",
        description="accept: a sender not in agents becomes device snmp-<ip>; reject: its traps are rejected",
    )
    max_datagram_bytes: int = Field(
        default=8192, ge=484, le=65507, description="larger datagrams are rejected unread (484: RFC 3417)"
    )
    max_variables: int = Field(default=64, ge=1, le=1024, description="varbinds kept per trap")
    max_devices: int = Field(
        default=10_000, ge=1, description="unknown senders remembered for their devices row (LRU)"
    )
    max_rejects_per_s: float = Field(
        default=20, gt=0, description="unauthenticated garbage lands at most this many rejects a second"
    )

    @field_validator("url")
    @classmethod
    def _udp(cls, value: str) -> str:
        parse_udp_url(value)
        return value

    @model_validator(mode="after")
    def _someone_may_send(self) -> SnmpTrapSourceConfig:
        if not self.communities and not self.users:
            raise ValueError("give communities (v1/v2c) or users (v3): with neither no trap is accepted")
        ids = [a.device_id for a in self.agents]
        if len(ids) != len(set(ids)):
            raise ValueError("an agent device_id is used twice")
        return self
