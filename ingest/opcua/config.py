"""The keys of a ``type: opcua`` source."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citylake.config import DeviceMetadata, SourceConfig
from citylake.ingest.opcua.codec import check_node_id, parse_browse_path


class Deadband(BaseModel):
    """A data-change filter the server applies: changes smaller than this are
    not reported (saves the uplink and the lake from sensor noise)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["absolute", "percent"] = Field(
        default="absolute", description="absolute: in the value's unit; percent: of the node's EURange"
    )
    value: float = Field(ge=0, description="smallest change that is reported")


class OpcUaNode(BaseModel):
    """One variable to read, and the reading it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str | None = Field(default=None, description='e.g. "ns=2;s=Pump1.Pressure" or "ns=2;i=1001"')
    browse_path: str | None = Field(
        default=None, description='resolved at each connect, e.g. "0:Objects/2:Pump1/2:Pressure"'
    )
    metric: str = Field(min_length=1, description="readings.metric")
    device_id: str = Field(min_length=1, description="readings.device_id")
    unit: str | None = Field(default=None, description="readings.unit")
    deadband: Deadband | None = Field(default=None, description="overrides the source's deadband")

    @field_validator("node_id")
    @classmethod
    def _node_id_syntax(cls, value: str | None) -> str | None:
        return None if value is None else check_node_id(value)

    @field_validator("browse_path")
    @classmethod
    def _browse_path_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value)
        return value

    @model_validator(mode="after")
    def _exactly_one_address(self) -> OpcUaNode:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError(
                f"node {self.device_id}/{self.metric}: give exactly one of node_id or browse_path"
            )
        return self

    @property
    def address(self) -> str:
        return self.node_id or self.browse_path or ""


SecurityPolicy = Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]


class OpcUaSourceConfig(SourceConfig):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["opcua"] = "opcua"
    url: str = Field(description="the server endpoint, opc.tcp://host:port/path")
    nodes: list[OpcUaNode] = Field(min_length=1, description="the variables to read")
    devices: dict[str, DeviceMetadata] = Field(
        default_factory=dict,
        description="device_id (of the nodes) -> name, device_type, district, civil_code, address, "
        "longitude, latitude: how the device appears in `devices`",
    )
    mode: Literal["subscribe", "poll"] = Field(
        default="subscribe", description="subscribe: the server reports changes; poll: read every interval_s"
    )
    sampling_interval_ms: float = Field(
        default=1000, ge=0, description="how often the server samples each node (0: as fast as it can)"
    )
    publishing_interval_ms: float = Field(
        default=1000, gt=0, description="how often the server sends the changes it collected"
    )
    queue_size: int = Field(
        default=10, ge=1, description="changes the server keeps per node between publishes (1: latest only)"
    )
    deadband: Deadband | None = Field(default=None, description="default data-change filter of every node")
    interval_s: float = Field(default=10, gt=0, description="poll mode: read every node this often")
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    security_policy: SecurityPolicy | None = Field(
        default=None, description="required unless security_mode None"
    )
    certificate: str | None = Field(
        default=None, description="client certificate (PEM or DER) for Sign modes"
    )
    private_key: str | None = Field(default=None, description="its private key (PEM or DER)")
    private_key_password: str | None = None
    server_certificate: str | None = Field(
        default=None,
        description="the server's certificate (PEM or DER), pinned: required for Sign modes unless "
        "trust_on_first_use",
    )
    trust_on_first_use: bool = Field(
        default=False,
        description="Sign modes without server_certificate: take the certificate the server's endpoint "
        "list presents on the first connection (unsecured: whoever answers first is trusted) and pin it "
        "for the life of the process",
    )
    application_uri: str | None = Field(
        default=None, description="must equal the URI in the client certificate's subjectAltName"
    )
    username: str | None = None
    password: str | None = None
    timeout_s: float = Field(default=5, gt=0, description="wait for one answer")
    watchdog_interval_s: float = Field(
        default=2, gt=0, description="probe the server this often; a failed probe means reconnect"
    )
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "opc.tcp":
            raise ValueError(f"expected opc.tcp://host:port/path, got {value!r}")
        if not parts.hostname:
            raise ValueError(f"no server host in {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSourceConfig:
        if self.security_mode != "None":
            missing = [
                key for key in ("security_policy", "certificate", "private_key") if getattr(self, key) is None
            ]
            if missing:
                raise ValueError(f"security_mode {self.security_mode} needs {', '.join(missing)}")
            if self.server_certificate is None and not self.trust_on_first_use:
                raise ValueError(
                    f"security_mode {self.security_mode} needs server_certificate (the server's certificate, "
                    "pinned), or trust_on_first_use: true to trust the one it presents first"
                )
        elif self.security_policy is not None:
            raise ValueError("security_policy is set but security_mode is None; set Sign or SignAndEncrypt")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        unknown = sorted(set(self.devices) - {node.device_id for node in self.nodes})
        if unknown:
            raise ValueError(f"devices names {', '.join(unknown)}, which no node has as device_id")
        seen: set[tuple[str, str]] = set()
        for node in self.nodes:
            key = (node.device_id, node.metric)
            if key in seen:
                raise ValueError(f"device {node.device_id} metric {node.metric} is configured twice")
            seen.add(key)
        return self
