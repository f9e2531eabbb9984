"""The keys of a ``type: jt808`` source: where terminals connect, auth, bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from citylake.config import DeviceMetadata
from citylake.ingest.tcp_listen_config import TcpListenConfig


class JT808Terminal(DeviceMetadata):
    """A terminal the config names: landed in `devices` at start."""

    phone: str = Field(pattern=r"^[0-9]{1,20}$", description="terminal phone number (devices.device_id)")
    plate: str | None = Field(default=None, max_length=32, description="licence plate")


class JT808SourceConfig(TcpListenConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["jt808"] = "jt808"
    url: str = Field(description="where terminals connect: tcp://0.0.0.0:7611")
    auth_secret: str = Field(
        min_length=16,
        description="secret the auth codes handed out at registration are derived from (HMAC of the phone)",
    )
    require_auth: bool = Field(
        default=True, description="refuse locations and heartbeats before 0x0102 authentication"
    )
    terminals: list[JT808Terminal] = Field(default_factory=list, description="terminals named in advance")
    accept_unknown: bool = Field(
        default=True, description="register phones not in `terminals` (false: registration refused)"
    )
    max_frame_bytes: int = Field(
        default=2100, ge=64, description="longer frames (escaped, between the 7e flags) are rejected"
    )
    idle_timeout_s: float = Field(
        default=180, gt=0, description="close a connection silent this long (three missed 60-s heartbeats)"
    )
    max_devices: int = Field(default=100_000, ge=1, description="phones remembered for `devices` rows")
