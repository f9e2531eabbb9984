"""SNMP credentials as config: a v2c community or a v3 USM user. Shared by
polling (``snmp``) and the trap receiver (``snmp_trap``). Pure pydantic: the
protocol objects are made in ``engine.py``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

AuthProtocol = Literal["MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"]
PrivProtocol = Literal["DES", "3DES", "AES", "AES192", "AES256"]
_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2}){5,32}$")


class UsmUser(BaseModel):
    """An SNMPv3 user of the User-based Security Model (RFC 3414)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field(min_length=1, max_length=32, description="the USM user name (securityName)")
    auth_protocol: AuthProtocol | None = Field(default=None, description="none: noAuthNoPriv")
    auth_key: str | None = Field(default=None, description="passphrase, at least 8 characters (RFC 3414)")
    priv_protocol: PrivProtocol | None = Field(default=None, description="none: authNoPriv")
    priv_key: str | None = Field(default=None, description="passphrase, at least 8 characters")
    engine_id: str | None = Field(
        default=None,
        description="traps only: the sending agent's snmpEngineID in hex (snmptrap -e); v3 traps are "
        "authenticated with keys localised to it",
    )

    @field_validator("auth_key", "priv_key")
    @classmethod
    def _long_enough(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 8:
            raise ValueError("SNMPv3 passphrases must be at least 8 characters (RFC 3414)")
        return value

    @field_validator("engine_id")
    @classmethod
    def _engine_id_hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.match(value):
            raise ValueError(f"engine_id {value!r}: expected 5 to 32 bytes in hex, e.g. 0x8000000001020304")
        return value.removeprefix("0x").lower() if value is not None else None

    @model_validator(mode="after")
    def _levels(self) -> UsmUser:
        if (self.auth_protocol is None) != (self.auth_key is None):
            raise ValueError(f"user {self.user}: give auth_protocol and auth_key together")
        if (self.priv_protocol is None) != (self.priv_key is None):
            raise ValueError(f"user {self.user}: give priv_protocol and priv_key together")
        if self.priv_protocol is not None and self.auth_protocol is None:
            raise ValueError(f"user {self.user}: privacy (priv_protocol) needs authentication too")
        return self

    @property
    def level(self) -> str:
        if self.priv_protocol is not None:
            return "authPriv"
        return "authNoPriv" if self.auth_protocol is not None else "noAuthNoPriv"


class SnmpAuth(BaseModel):
    """How a poller speaks to one agent: v2c with a community, or v3 with a user."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["2c", "3"] = Field(default="2c", description="2c or 3")
    community: str | None = Field(default=None, description="v2c: the read community")
    usm: UsmUser | None = Field(default=None, description="v3: the USM user")
    context: str = Field(default="", description="v3: the contextName (empty for most agents)")

    @model_validator(mode="after")
    def _matches_version(self) -> SnmpAuth:
        if self.version == "2c" and (self.community is None or self.usm is not None):
            raise ValueError("version 2c needs community (and no usm)")
        if self.version == "3" and (self.usm is None or self.community is not None):
            raise ValueError("version 3 needs usm (and no community)")
        return self
