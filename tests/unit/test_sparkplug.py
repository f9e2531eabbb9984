from __future__ import annotations

import time
from typing import Any

import pytest

from citylake.ingest.mqtt import sparkplug as spb
from citylake.ingest.mqtt.sparkplug import Payload, SparkplugDecoder, SparkplugError, parse_topic

T = 1_764_072_000_000


def payload(*metrics: dict[str, Any], timestamp: int = T, seq: int = 0) -> bytes:
    message = Payload(timestamp=timestamp, seq=seq)
    for fields in metrics:
        message.metrics.add(**fields)
    return bytes(message.SerializeToString())


def test_topics() -> None:
    t = parse_topic("spBv1.0/plant1/DDATA/gw-7/pump-3")
    assert (t.group_id, t.message_type, t.edge_node_id, t.device_id) == ("plant1", "DDATA", "gw-7", "pump-3")
    assert t.citylake_device_id == "gw-7/pump-3"
    assert parse_topic("spBv1.0/plant1/NDATA/gw-7").citylake_device_id == "gw-7"
    for bad in ("spBv1.0/plant1", "spAv1.0/g/NDATA/n", "spBv1.0//NDATA/n", "spBv1.0/g/NDATA/n/d/x"):
        with pytest.raises(SparkplugError, match="not a Sparkplug B topic"):
            parse_topic(bad)


def test_birth_names_aliases_and_data_resolves_them() -> None:
    decoder = SparkplugDecoder(lambda: T)
    birth = decoder.decode(
        "spBv1.0/plant1/DBIRTH/gw-7/pump-3",
        payload(
            {"name": "pressure", "alias": 1, "datatype": spb.DOUBLE, "double_value": 3.5},
            {"name": "running", "alias": 2, "datatype": spb.BOOLEAN, "boolean_value": True},
            {"name": "offset", "alias": 3, "datatype": spb.INT16, "int_value": 65535},
            {"name": "mode", "alias": 4, "datatype": spb.STRING, "string_value": "auto"},
            {"name": "energy", "alias": 5, "datatype": spb.INT64, "long_value": 2**64 - 2},
        ),
    )
    assert [e["kind"] for e in birth.events] == ["online"]
    assert [(r["metric"], r["value"], r["text"]) for r in birth.readings] == [
        ("pressure", 3.5, None), ("running", 1.0, None), ("offset", -1.0, None), ("mode", None, "auto"),
        ("energy", -2.0, None),
    ]  # fmt: skip
    data = decoder.decode(
        "spBv1.0/plant1/DDATA/gw-7/pump-3",
        payload(
            {"alias": 1, "double_value": 4.25, "timestamp": T + 500},
            {"alias": 2, "boolean_value": False},
            {"alias": 9, "double_value": 1.0},
            {"alias": 1, "is_null": True},
        ),
    )
    assert [(r["device_id"], r["metric"], r["value"], r["ts"], r["quality"]) for r in data.readings] == [
        ("gw-7/pump-3", "pressure", 4.25, T + 500, 0),
        ("gw-7/pump-3", "running", 0.0, T, 0),
        ("gw-7/pump-3", "pressure", None, T, 1),
    ]
    assert data.problems == ["alias 9 of edge node gw-7 unknown: no BIRTH declared it"]


def test_a_new_node_birth_forgets_old_aliases() -> None:
    decoder = SparkplugDecoder(lambda: T)
    decoder.decode(
        "spBv1.0/g/NBIRTH/n1", payload({"name": "a", "alias": 1, "datatype": spb.FLOAT, "float_value": 1})
    )
    decoder.decode(
        "spBv1.0/g/NBIRTH/n1", payload({"name": "b", "alias": 2, "datatype": spb.FLOAT, "float_value": 1})
    )
    later = decoder.decode("spBv1.0/g/NDATA/n1", payload({"alias": 1, "float_value": 5}))
    assert later.readings == [] and "alias 1" in later.problems[0]


def test_death_is_an_offline_event() -> None:
    out = SparkplugDecoder(lambda: T).decode("spBv1.0/g/DDEATH/n1/d1", payload(seq=7))
    assert out.readings == []
    assert [(e["device_id"], e["kind"]) for e in out.events] == [("n1/d1", "offline")]
    assert '"seq": 7' in str(out.events[0]["attributes"])


def test_non_scalar_metrics_and_garbage() -> None:
    decoder = SparkplugDecoder(lambda: T)
    out = decoder.decode("spBv1.0/g/NDATA/n", payload({"name": "table", "datatype": 16}))
    assert out.problems == ["metric table: data type 16 is not a scalar citylake stores"]
    with pytest.raises(SparkplugError, match="invalid Sparkplug B payload"):
        decoder.decode("spBv1.0/g/NDATA/n", b"\xff\xff\xff\xff garbage")
    assert decoder.decode("spBv1.0/g/NCMD/n", b"anything").readings == []


def _birth(aliases: range) -> bytes:
    return payload(
        *({"name": f"m{a}", "alias": a, "datatype": spb.DOUBLE, "double_value": 1.0} for a in aliases)
    )


def test_the_alias_table_is_bounded_and_forgets_the_least_recently_heard_node() -> None:
    decoder = SparkplugDecoder(lambda: T, max_aliases=1000)
    for n in range(8):  # 8 edge nodes x 250 aliases into a bound of 1000
        decoder.decode(f"spBv1.0/g/NBIRTH/node-{n}", _birth(range(250)))
        # node-0 keeps talking, so it is the most recently heard, not the oldest.
        decoder.decode("spBv1.0/g/NDATA/node-0", payload({"alias": 1, "double_value": 2.0}))
    assert decoder.aliases <= 1000
    assert decoder.counters()["sparkplug_aliases_evicted"] == 1000
    assert decoder.decode("spBv1.0/g/NDATA/node-0", payload({"alias": 7, "double_value": 2.0})).readings
    assert decoder.decode("spBv1.0/g/NDATA/node-7", payload({"alias": 7, "double_value": 2.0})).readings
    forgotten = decoder.decode("spBv1.0/g/NDATA/node-1", payload({"alias": 7, "double_value": 2.0}))
    assert forgotten.readings == [] and "no BIRTH declared it" in forgotten.problems[0]
    # One node alone declaring more than the bound keeps the first 1000.
    decoder.decode("spBv1.0/g/NBIRTH/huge", _birth(range(1500)))
    assert decoder.aliases == 1000 and decoder.counters()["sparkplug_aliases_refused"] == 500


def test_a_birth_does_not_scan_the_other_nodes_aliases() -> None:
    # 80 edge nodes x 5,000 aliases; the old table scanned all 400k per NBIRTH.
    decoder = SparkplugDecoder(lambda: T)
    for n in range(80):
        decoder._births.nodes[("g", f"node-{n}")] = {a: (f"m{a}", spb.DOUBLE) for a in range(5000)}
        decoder._births.count += 5000
    small = _birth(range(3))
    started = time.perf_counter()
    for _ in range(50):
        decoder.decode("spBv1.0/g/NBIRTH/node-3", small)
    per_birth = (time.perf_counter() - started) / 50
    assert per_birth < 0.005, f"{per_birth * 1000:.1f} ms per NBIRTH"
    assert decoder.aliases == 79 * 5000 + 3
