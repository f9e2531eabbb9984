"""Sparkplug B (Eclipse Sparkplug 3.0) payloads to readings and device events.

The protobuf schema is built here from a descriptor, not generated code: only
the fields citylake reads are declared, with the field numbers the
specification fixes, and protobuf skips the rest on the wire (datasets,
templates, properties), so any conforming edge node decodes.

Topics are ``spBv1.0/<group>/<type>/<edge node>[/<device>]``. BIRTH messages
name every metric and give its alias; DATA messages may carry aliases only,
resolved through the aliases the last BIRTH of that edge node declared. A
BIRTH is an ``online`` device event, a DEATH an ``offline`` one.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

NAMESPACE = "spBv1.0"

_F = descriptor_pb2.FieldDescriptorProto
_METRIC_FIELDS = [
    # (name, number, type) as the Sparkplug B specification numbers them.
    ("name", 1, _F.TYPE_STRING),
    ("alias", 2, _F.TYPE_UINT64),
    ("timestamp", 3, _F.TYPE_UINT64),
    ("datatype", 4, _F.TYPE_UINT32),
    ("is_historical", 5, _F.TYPE_BOOL),
    ("is_transient", 6, _F.TYPE_BOOL),
    ("is_null", 7, _F.TYPE_BOOL),
    ("int_value", 10, _F.TYPE_UINT32),
    ("long_value", 11, _F.TYPE_UINT64),
    ("float_value", 12, _F.TYPE_FLOAT),
    ("double_value", 13, _F.TYPE_DOUBLE),
    ("boolean_value", 14, _F.TYPE_BOOL),
    ("string_value", 15, _F.TYPE_STRING),
    ("bytes_value", 16, _F.TYPE_BYTES),
]
_PAYLOAD_FIELDS = [("timestamp", 1, _F.TYPE_UINT64), ("seq", 3, _F.TYPE_UINT64), ("uuid", 4, _F.TYPE_STRING)]

# Sparkplug data type codes.
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = range(1, 9)
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = range(9, 16)
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}


def _build_messages() -> tuple[type[Any], type[Any]]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="citylake_sparkplug_b.proto", package="citylake.sparkplug", syntax="proto2"
    )
    payload = proto.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    for name, number, kind in _METRIC_FIELDS:
        metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    for name, number, kind in _PAYLOAD_FIELDS:
        payload.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    payload.field.add(
        name="metrics", number=2, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
        type_name=".citylake.sparkplug.Payload.Metric",
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    payload_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("citylake.sparkplug.Payload"))
    return payload_class, payload_class.Metric


Payload, Metric = _build_messages()


class SparkplugError(ValueError):
    """A message that yields nothing; the text is the ``rejected.reason``."""


@dataclass(frozen=True)
class SparkplugTopic:
    group_id: str
    message_type: str
    edge_node_id: str
    device_id: str | None

    @property
    def citylake_device_id(self) -> str:
        """``<edge node>/<device>`` for device messages, ``<edge node>`` for node ones."""
        return f"{self.edge_node_id}/{self.device_id}" if self.device_id else self.edge_node_id


# Messages that show a device is there; a DEATH does not make one known.
DEVICE_MESSAGES = frozenset({"NBIRTH", "DBIRTH", "NDATA", "DDATA"})


def device_row(where: SparkplugTopic, first_seen: int, last_seen: int) -> dict[str, object]:
    """The ``devices`` row a Sparkplug topic gives: a device's parent is its
    edge node; the group and node ids are its attributes."""
    attributes = {"sparkplug_group_id": where.group_id, "sparkplug_edge_node_id": where.edge_node_id}
    return {
        "device_id": where.citylake_device_id,
        "type": "sparkplug_device" if where.device_id else "sparkplug_edge_node",
        "protocol": "mqtt",
        "parent_id": where.edge_node_id if where.device_id else None,
        "attributes": json.dumps(attributes, sort_keys=True),
        "first_seen": first_seen,
        "last_seen": last_seen,
    }


def parse_topic(topic: str) -> SparkplugTopic:
    parts = topic.split("/")
    if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts):
        raise SparkplugError(f"not a Sparkplug B topic: {topic[:120]}")
    return SparkplugTopic(parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else None)


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def metric_value(metric: Any) -> tuple[float | None, str | None]:
    """(value, text) of one metric by its Sparkplug data type."""
    if metric.is_null:
        return None, None
    kind = metric.datatype
    if kind in (INT8, INT16, INT32, UINT8, UINT16, UINT32):
        raw = metric.int_value
        return float(_signed(raw, _SIGNED_BITS[kind]) if kind in _SIGNED_BITS else raw), None
    if kind in (INT64, UINT64, DATETIME):
        raw = metric.long_value
        return float(_signed(raw, 64) if kind == INT64 else raw), None
    if kind == FLOAT:
        return float(metric.float_value), None
    if kind == DOUBLE:
        return float(metric.double_value), None
    if kind == BOOLEAN:
        return (1.0 if metric.boolean_value else 0.0), None
    if kind in (STRING, TEXT, UUID):
        return None, metric.string_value
    raise SparkplugError(
        f"metric {metric.name or metric.alias}: data type {kind} is not a scalar citylake stores"
    )


@dataclass
class SparkplugDecoded:
    readings: list[dict[str, object]] = field(default_factory=list)
    events: list[dict[str, object]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _Births:
    """What the last BIRTH of each edge node declared: alias -> (name, type),
    one table per edge node, so a new NBIRTH drops its node's table in O(1)
    instead of scanning every alias of every node. At most ``max_aliases`` in
    all: beyond, the table of the least recently heard node goes whole
    (counted; its DATA is rejected until its next BIRTH), and a single node
    declaring more than the bound keeps only the first ``max_aliases``."""

    def __init__(self, max_aliases: int) -> None:
        self.max_aliases = max_aliases
        self.nodes: OrderedDict[tuple[str, str], dict[int, tuple[str, int]]] = OrderedDict()
        self.count = 0
        self.evicted = 0  # aliases forgotten at the bound
        self.refused = 0  # aliases not taken: their node alone fills the bound

    def forget_node(self, group: str, node: str) -> None:
        table = self.nodes.pop((group, node), None)
        if table is not None:
            self.count -= len(table)

    def declare(self, group: str, node: str, alias: int, name: str, datatype: int) -> None:
        key = (group, node)
        table = self.nodes.get(key)
        if table is None:
            table = self.nodes[key] = {}
        self.nodes.move_to_end(key)
        if alias not in table:
            while self.count >= self.max_aliases and next(iter(self.nodes)) != key:
                _, oldest = self.nodes.popitem(last=False)
                self.count -= len(oldest)
                self.evicted += len(oldest)
            if self.count >= self.max_aliases:
                self.refused += 1
                return
            self.count += 1
        table[alias] = (name, datatype)

    def lookup(self, group: str, node: str, alias: int) -> tuple[str, int] | None:
        key = (group, node)
        table = self.nodes.get(key)
        if table is None:
            return None
        self.nodes.move_to_end(key)
        return table.get(alias)


class SparkplugDecoder:
    """Stateful (alias tables), one per MQTT source; used from paho's thread only."""

    def __init__(self, now_ms: Callable[[], int], max_aliases: int = 1_000_000) -> None:
        self._births = _Births(max_aliases)
        self._now_ms = now_ms

    def counters(self) -> dict[str, int]:
        births = self._births
        return {"sparkplug_aliases_evicted": births.evicted, "sparkplug_aliases_refused": births.refused}

    @property
    def aliases(self) -> int:
        return self._births.count

    def decode(self, topic: str, payload: bytes) -> SparkplugDecoded:
        where = parse_topic(topic)
        kind = where.message_type
        if kind in ("NCMD", "DCMD", "STATE"):
            return SparkplugDecoded()  # commands and host state carry no measurements
        try:
            message = Payload.FromString(payload)
        except Exception as exc:  # protobuf raises DecodeError and friends
            raise SparkplugError(f"invalid Sparkplug B payload on {topic[:120]}: {exc}") from None
        out = SparkplugDecoded()
        sent_at = message.timestamp or self._now_ms()
        device_id = where.citylake_device_id
        if kind == "NBIRTH":
            self._births.forget_node(where.group_id, where.edge_node_id)
        if kind in ("NBIRTH", "DBIRTH", "NDEATH", "DDEATH"):
            state = "online" if kind.endswith("BIRTH") else "offline"
            attributes = json.dumps({"group_id": where.group_id, "sparkplug": kind, "seq": message.seq})
            out.events.append(
                {"device_id": device_id, "ts": int(sent_at), "kind": state, "attributes": attributes}
            )
            if kind.endswith("DEATH"):
                return out
        elif kind not in ("NDATA", "DDATA"):
            raise SparkplugError(f"unknown Sparkplug B message type {kind!r} on {topic[:120]}")
        for metric in message.metrics:
            self._reading(where, kind, metric, int(sent_at), device_id, out)
        return out

    def _reading(
        self,
        where: SparkplugTopic,
        kind: str,
        metric: Any,
        sent_at: int,
        device_id: str,
        out: SparkplugDecoded,
    ) -> None:
        group, node, alias = where.group_id, where.edge_node_id, int(metric.alias)
        name, datatype = metric.name, metric.datatype
        if kind.endswith("BIRTH") and metric.HasField("alias") and name:
            self._births.declare(group, node, alias, name, datatype)
        if not name:
            known = self._births.lookup(group, node, alias) if metric.HasField("alias") else None
            if known is None:
                out.problems.append(
                    f"alias {metric.alias} of edge node {where.edge_node_id} unknown: no BIRTH declared it"
                )
                return
            name = known[0]
            if not metric.HasField("datatype"):
                metric.datatype = known[1]
        try:
            value, text = metric_value(metric)
        except SparkplugError as exc:
            out.problems.append(str(exc))
            return
        out.readings.append({
            "device_id": device_id, "ts": int(metric.timestamp or sent_at), "metric": name,
            "value": value, "text": text, "quality": 1 if metric.is_null else 0,
        })  # fmt: skip
