"""CoAP payloads: SenML packs from RFC 8428's own examples (section 5.1), the
same records in SenML CBOR with the labels of its Table 4, and hostile input."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
import yaml

from citylake.ingest.coap.adapter import CoapSource
from citylake.ingest.coap.codec import CoapPayloadCodec, SenmlDecoder, cbor_loads
from citylake.ingest.coap.config import CoapSourceConfig
from citylake.ingest.mqtt.codec import JsonReadingsCodec, PayloadError

REPO = Path(__file__).resolve().parents[2]
NOW = 1_700_000_000.0

# RFC 8428 5.1.2 (multiple datapoints)
RFC_5_1_2 = b"""[
  {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
  {"n":"current","u":"A","v":1.2}
]"""
# RFC 8428 5.1.3 (multiple measurements), first records
RFC_5_1_3 = b"""[
  {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
   "bu":"A","bver":5,
   "n":"voltage","u":"V","v":120.1},
  {"n":"current","t":-5,"v":1.2},
  {"n":"current","t":-4,"v":1.3},
  {"n":"current","t":-3,"v":1.4}
]"""


def decoder() -> SenmlDecoder:
    return SenmlDecoder(max_records=100, now=lambda: NOW)


def test_rfc8428_multiple_datapoints_take_the_base_name_as_device() -> None:
    out = decoder().decode_json(RFC_5_1_2, None)
    assert out.device_id == ["urn:dev:ow:10e2073a01080063"] * 2
    assert out.metric == ["voltage", "current"]
    assert out.value == [120.1, 1.2] and out.unit == ["V", "A"]
    assert out.ts == [int(NOW * 1000)] * 2  # no time: "now" (RFC 8428 4.5.3)


def test_rfc8428_multiple_measurements_resolve_base_time_and_unit() -> None:
    out = decoder().decode_json(RFC_5_1_3, "meter-7")
    assert out.device_id == ["meter-7"] * 4
    assert out.ts == [1276020076001, 1276020071001, 1276020072001, 1276020073001]
    assert out.unit == ["V", "A", "A", "A"]  # bu applies where u is absent
    assert out.value == [120.1, 1.2, 1.3, 1.4]


def test_senml_cbor_uses_the_integer_labels() -> None:
    # RFC 8428 Table 4: bn -2, bt -3, bu -4, bver -1, n 0, u 1, v 2, t 6, vs 3, vb 4.
    pack = cbor2.dumps([
        {-2: "urn:dev:ow:10e2073a0108006:", -3: 1.276020076001e09, -4: "A", -1: 5,
         0: "voltage", 1: "V", 2: 120.1},
        {0: "current", 6: -5, 2: 1.2},
        {0: "door", 4: True},
        {0: "label", 3: "pump house"},
    ])  # fmt: skip
    out = decoder().decode_cbor(pack, None)
    assert out.metric == ["voltage", "current", "door", "label"]
    assert out.value == [120.1, 1.2, 1.0, None] and out.text == [None, None, None, "pump house"]
    assert out.ts[:2] == [1276020076001, 1276020071001]


def test_base_value_and_relative_time() -> None:
    out = decoder().decode_json(b'[{"bn":"d:","bv":100,"n":"x","v":5,"t":10}]', None)
    assert out.value == [105.0] and out.ts == [int((NOW + 10) * 1000)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{}", "non-empty array"),
        (b"[]", "non-empty array"),
        (b'[{"n":"x"}]', "exactly one of v, vs, vb, vd, s"),
        (b'[{"n":"x","v":1,"vs":"a"}]', "exactly one of"),
        (b'[{"n":"x","v":"1"}]', "v must be a number"),
        (b'[{"n":"x","vb":1}]', "vb must be a boolean"),
        (b'[{"n":5,"v":1}]', "n must be a string"),
        (b'[{"v":1}]', "no name"),
        (b'[{"n":"x","v":1,"t":"now"}]', "t must be a number"),
        (b"[1]", "expected an object"),
        (b'[{"n":"x","v":1e400}]', "infinity|not finite"),
        (b"\xef\xbb\xbf[", "invalid SenML JSON"),
    ],
)
def test_hostile_senml_json_is_rejected_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        decoder().decode_json(payload, "dev-1")


def test_senml_without_any_device_id_is_rejected() -> None:
    with pytest.raises(PayloadError, match="no device id"):
        decoder().decode_json(b'[{"n":"x","v":1}]', None)


def test_oversized_pack_is_rejected_before_decoding_its_records() -> None:
    pack = b"[" + b",".join([b'{"n":"x","v":1}'] * 101) + b"]"
    with pytest.raises(PayloadError, match="101 records exceeds max_records 100"):
        decoder().decode_json(pack, "d")


@pytest.mark.parametrize(
    "payload",
    [b"\x9f\xff\xff", b"\x81", b"\xa1\x00", b"\x5f" * 100_000, b"\x81" * 100_000 + b"\x00"],
)
def test_hostile_cbor_is_a_payload_error_not_a_crash(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decoder().decode_cbor(payload, "d")


def test_cbor_trailing_bytes_are_refused() -> None:
    with pytest.raises(ValueError, match="1 bytes after"):
        cbor_loads(cbor2.dumps([1]) + b"\x00")


def codec() -> CoapPayloadCodec:
    return CoapPayloadCodec(JsonReadingsCodec(units={"flow": "m3/h"}), decoder(), lambda: 42)


def test_json_cbor_and_text_plain_payloads() -> None:
    out = codec().decode(50, b'{"ts": 1000, "flow": 2.5}', "m-1", None)
    assert (out.metric, out.value, out.unit) == (["flow"], [2.5], ["m3/h"])
    out = codec().decode(60, cbor2.dumps({"ts": 1000, "flow": 3.0}), "m-1", None)
    assert out.value == [3.0]
    out = codec().decode(0, b" 1.75\n", "l-1", "level")
    assert (out.value, out.ts) == ([1.75], [42])
    out = codec().decode(0, b"dry", "l-1", "state")
    assert out.text == ["dry"]
    with pytest.raises(PayloadError, match="Content-Format 41"):
        codec().decode(41, b"<x/>", "d", None)
    with pytest.raises(PayloadError, match="not UTF-8"):
        codec().decode(0, b"\xff", "d", "m")
    with pytest.raises(PayloadError, match="metric from the config"):
        codec().decode(0, b"1", "d", None)


def test_sample_validates_and_names_its_devices() -> None:
    data = yaml.safe_load((REPO / "ingest" / "coap" / "sample.yaml").read_text())
    source = CoapSource(CoapSourceConfig.model_validate(data))
    devices = {d["device_id"] for d in source.known_devices(0)}
    assert {"air-gulou-1", "well-gulou-3"} <= devices


def test_entry_point_names_the_class() -> None:
    assert 'coap = "citylake.ingest.coap.adapter:CoapSource"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "coaps://h:5684"}, "coaps:// DTLS is not supported"),
        ({"resources": []}, "needs resources"),
        ({"mode": "server"}, "only in mode observe"),
        ({"resources": [{"device_id": "a", "path": "x"}]}, "must start with /"),
        ({"path": "/t/{a}{b}"}, "whole"),
    ],
)
def test_bad_config_names_the_problem(change: dict[str, object], message: str) -> None:
    data = yaml.safe_load((REPO / "ingest" / "coap" / "sample.yaml").read_text())
    with pytest.raises(ValueError, match=message):
        CoapSourceConfig.model_validate({**data, **change})
