"""Reject reasons as a closed set of kinds: the ``reason`` label of
``citylake_ingest_rejected_total``.

A reason is free text that carries what the sender chose (a topic, a SIP
From, a path); as a Prometheus label it would let anyone mint series without
bound. The label is one of the kinds below, found from the reason's first
words or a phrase in it; the full text stays in the ``rejected`` row.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.metadata import entry_points

from citylake.ingest.registry import GROUP
from citylake.schemas import TABLES

# Reasons whose text up to the first ":" is already a fixed phrase of ours.
PREFIX_KINDS = frozenset(
    {
        "invalid JSON",
        "metric type conflict",
        "bad MANSCDP body",
        "malformed SIP",
        "oversized body",
        "unsupported Content-Type",
        "unsupported MANSCDP",
        "unregistered device",
        "foreign address",
        "foreign device id",
        "REGISTER refused",
        "bad REGISTER",
        "internal error",
        "modbus no response",
        "modbus skipped",
        "modbus bad response",
        "modbus exception",
        "modbus error",
        "modbus timeout",
        "modbus connection failed",
        "invalid Sparkplug B payload on spBv1.0",
    }
)
# (phrase anywhere in the reason, kind), first match wins.
PHRASE_KINDS: tuple[tuple[str, str], ...] = (
    ("outside the accepted window", "timestamp outside window"),
    ("outside 2000..2100", "timestamp out of range"),
    ("exceeds max_", "oversized"),
    ("matches no configured template", "no topic template"),
    ("Sparkplug B", "sparkplug"),
    ("not a column of this table", "unknown column"),
    ("timestamp", "bad timestamp"),
    ("token not allowed for device", "token not allowed"),
    ("(node ", "opcua value"),
    ("(path ", "http payload"),
    ("(topic ", "mqtt payload"),
)
# Row validation names the table and column: "readings.value: ...".
_COLUMNS = frozenset(f"{name}.{column}" for name, spec in TABLES.items() for column in spec.schema.names)
# Adapters name their own reasons "<type> <fixed phrase>: <details>" (``dlt645
# error reply: ...``); the head is the kind when <type> is an installed adapter.
_ADAPTER_HEAD = re.compile(r"^([a-z0-9_]{2,20}) [a-z0-9 ]{1,40}$")
OTHER = "other"


@cache
def _adapter_types() -> frozenset[str]:
    return frozenset(ep.name for ep in entry_points(group=GROUP))


def reason_kind(reason: str) -> str:
    """The closed-set label of ``reason``."""
    head = reason.split(":", 1)[0]
    if head in PREFIX_KINDS or (head in _COLUMNS and PHRASE_KINDS[0][0] not in reason):
        return head
    for phrase, kind in PHRASE_KINDS:
        if phrase in reason:
            return kind
    match = _ADAPTER_HEAD.match(head)
    if match and match.group(1) in _adapter_types():
        return head
    return OTHER
