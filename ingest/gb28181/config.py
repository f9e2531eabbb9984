"""The keys of a ``type: gb28181`` source: the platform's identity and timers."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from citylake.config import SourceConfig

Transport = Literal["udp", "tcp"]


class GB28181SourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["gb28181"] = "gb28181"
    transports: list[Transport] | None = Field(
        default=None,
        description="listen on these transports at the url's host:port; default the url's scheme",
    )
    platform_id: str = Field(pattern=r"^[0-9]{20}$", description="the platform's 20-digit SIP id")
    domain: str = Field(pattern=r"^[0-9]{10}$", description="SIP domain: 10 digits (civil code + industry)")
    password: str | None = Field(
        default=None, min_length=1, description="REGISTER password (digest) of devices not in passwords"
    )
    passwords: dict[str, str] = Field(
        default_factory=dict,
        description="per-device REGISTER passwords: 20-digit device id -> password (overrides password)",
    )
    realm: str | None = Field(default=None, description="digest realm; default the domain")
    keepalive_interval_s: float = Field(default=60.0, gt=0, description="devices' keepalive interval")
    missed_keepalives: int = Field(default=3, ge=1, description="offline after this many missed keepalives")
    register_expires_max: int = Field(
        default=86400, ge=1, description="longest registration granted (s); longer requests are cut to it"
    )
    register_expires_default: int = Field(default=3600, ge=1, description="when a REGISTER names none")
    catalog_query_on_register: bool = Field(
        default=True, description="send Catalog and DeviceInfo queries after a device's first REGISTER"
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=256, description="larger MANSCDP bodies get 400")
    nonce_ttl_s: float = Field(default=300.0, gt=0, description="digest nonces older than this are stale")
    timezone: str = Field(
        default="Asia/Shanghai",
        description="zone of the Date header and of device times (AlarmTime, Time): devices keep local time",
    )
    check_interval_s: float | None = Field(
        default=None, gt=0, description="how often online state is checked; default interval/4, at most 1 s"
    )
    # Bounds of everything the network feeds (issue 13): each table evicts or refuses at its bound.
    max_devices: int = Field(
        default=100_000,
        ge=1,
        description="device and channel records kept; the least recently seen "
        "unregistered one is forgotten beyond",
    )
    max_registrations: int = Field(
        default=20_000, ge=1, description="registered devices at once; a REGISTER beyond gets 503"
    )
    answered_cache_max: int = Field(
        default=20_000, ge=1, description="UDP responses kept to answer retransmissions (Timer J)"
    )
    answered_cache_bytes: int = Field(
        default=16 * 1024 * 1024, ge=65536, description="bytes of those responses; the oldest go first"
    )
    max_tcp_connections: int = Field(
        default=2048, ge=1, description="TCP connections at once; more are closed"
    )
    tcp_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="a TCP connection silent this long is closed"
    )
    tcp_write_buffer_max: int = Field(
        default=1024 * 1024, ge=4096, description="bytes queued to a TCP peer that does not read; then closed"
    )
    auth_failures_max: int = Field(
        default=5, ge=1, description="wrong-password REGISTERs from one address within the window; then 403"
    )
    auth_failure_window_s: float = Field(default=60.0, gt=0, description="window of auth_failures_max")
    max_nonces: int = Field(default=20_000, ge=16, description="digest nonces tracked (issued, not expired)")

    @field_validator("url")
    @classmethod
    def _sip_scheme(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("udp", "tcp", "sip"):
            raise ValueError(f"expected udp://host:port or tcp://host:port, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no listen host in {value!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _platform_in_domain(self) -> GB28181SourceConfig:
        if self.register_expires_default > self.register_expires_max:
            raise ValueError("register_expires_default must not exceed register_expires_max")
        if self.password is None and not self.passwords:
            raise ValueError("give password (shared) or passwords (per device id), or both")
        bad = sorted(k for k in self.passwords if not (len(k) == 20 and k.isdigit()))
        if bad:
            raise ValueError(f"passwords: keys must be 20-digit device ids, got {bad[0]!r}")
        if any(not v for v in self.passwords.values()):
            raise ValueError("passwords: a password must not be empty")
        return self

    def password_of(self, device_id: str) -> str | None:
        """The REGISTER password of ``device_id``; None: it may not register."""
        return self.passwords.get(device_id, self.password)

    @property
    def listen_host(self) -> str:
        return urlsplit(self.url).hostname or "0.0.0.0"

    @property
    def listen_port(self) -> int:
        return urlsplit(self.url).port or 5060

    @property
    def listen_transports(self) -> list[Transport]:
        if self.transports:
            return list(dict.fromkeys(self.transports))
        return ["tcp"] if urlsplit(self.url).scheme == "tcp" else ["udp"]

    @property
    def digest_realm(self) -> str:
        return self.realm or self.domain

    @property
    def check_every_s(self) -> float:
        if self.check_interval_s is not None:
            return self.check_interval_s
        return min(1.0, self.keepalive_interval_s / 4)
