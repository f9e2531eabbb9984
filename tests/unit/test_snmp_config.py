"""SNMP config models, the trap receiver's datagram screen and the reject budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.reject_budget import RejectBudget
from citylake.ingest.snmp.adapter import SnmpSource
from citylake.ingest.snmp.config import SnmpSourceConfig
from citylake.ingest.snmp_trap.adapter import SnmpTrapSource
from citylake.ingest.snmp_trap.config import SnmpTrapSourceConfig
from tests.unit.test_snmp_codec import LINK_DOWN_V2C

REPO = Path(__file__).resolve().parents[2]


def sample(folder: str) -> dict[str, object]:
    data = yaml.safe_load((REPO / "ingest" / folder / "sample.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_samples_validate_and_build_sources() -> None:
    poll = SnmpSource(SnmpSourceConfig.model_validate(sample("snmp")))
    assert [t.name for t in poll.targets()] == ["ups-gulou-7", "switch-gulou-7"]
    ups = poll.targets()[0]
    assert ups.endpoint == "udp://10.30.0.7:161" and ups.credentials.version == "3"
    assert [o.metric for o in ups.columns] == ["output_voltage"]
    devices = {d["device_id"]: d for d in poll.known_devices(0)}
    assert devices["ups-gulou-7"]["type"] == "ups" and devices["ups-gulou-7"]["protocol"] == "snmp"
    assert "change-me" not in str(devices)  # credentials never reach the registry
    traps = SnmpTrapSource(SnmpTrapSourceConfig.model_validate(sample("snmp_trap")))
    assert {d["device_id"] for d in traps.known_devices(0)} == {"ups-gulou-7", "signal-gulou-12"}


def test_entry_points_name_these_classes() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert 'snmp = "citylake.ingest.snmp.adapter:SnmpSource"' in text
    assert 'snmp_trap = "citylake.ingest.snmp_trap.adapter:SnmpTrapSource"' in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "tcp://10.0.0.1:161"}, "udp://host:port"),
        ({"auth": {"version": "2c"}}, "needs community"),
        ({"auth": {"version": "3", "usm": {"user": "u", "auth_protocol": "SHA", "auth_key": "short"}}},
         "at least 8"),
        ({"auth": {"version": "3", "usm": {"user": "u", "priv_protocol": "AES", "priv_key": "12345678"}}},
         "needs authentication"),
        ({"devices": [{"device_id": "d", "objects": [{"oid": "sysUpTime.0", "metric": "m"}]}]}, "numeric"),
        ({"devices": [{"device_id": "d", "objects": [{"oid": "1.3.6.1.2.1.1.3.0", "metric": "m"},
                                                      {"oid": "1.3.6.1.2.1.1.5.0", "metric": "m"}]}]},
         "configured twice"),
    ],
)  # fmt: skip
def test_bad_poll_config_names_the_problem(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SnmpSourceConfig.model_validate({**sample("snmp"), **change})


def test_trap_config_needs_someone_to_accept() -> None:
    with pytest.raises(ValidationError, match="communities"):
        SnmpTrapSourceConfig.model_validate({"name": "t", "url": "udp://0.0.0.0:162"})
    with pytest.raises(ValidationError, match="engine_id"):
        SnmpTrapSourceConfig.model_validate(
            {**sample("snmp_trap"), "agents": [{"device_id": "x", "engine_id": "zz"}]}
        )


class _Ctx:
    source, site = "traps", "s1"

    def __init__(self) -> None:
        self.rejects: list[str] = []

    def reject(self, raw: bytes, reason: str, ack: object = None, input_id: object = None) -> None:
        self.rejects.append(reason)


def screening_source(**extra: object) -> tuple[SnmpTrapSource, _Ctx]:
    data = {
        "name": "t",
        "url": "udp://127.0.0.1:1162",
        "communities": ["public"],
        "max_rejects_per_s": 3,
        **extra,
    }
    source = SnmpTrapSource(SnmpTrapSourceConfig.model_validate(data))
    ctx = _Ctx()
    source._ctx = ctx  # type: ignore[assignment]
    return source, ctx


def test_screen_passes_a_trap_with_a_configured_community() -> None:
    source, ctx = screening_source()
    assert source.screen(LINK_DOWN_V2C, ("10.0.0.1", 5000))
    assert ctx.rejects == []


@pytest.mark.parametrize(
    ("datagram", "reason"),
    [
        (LINK_DOWN_V2C.replace(b"public", b"secret"), "snmp trap bad community: from 10.0.0.1:5000"),
        (b"\x30\x05\x02\x01", "snmp trap undecodable"),
        (b"GET / HTTP/1.1\r\n\r\n", "snmp trap undecodable"),
        (b"\x30" * 9000, "snmp trap too large: 9000 bytes"),
        (LINK_DOWN_V2C[:-3], "snmp trap undecodable"),
        (bytes.fromhex("300602010704017a"), "snmp trap unsupported version: 7"),
    ],
)
def test_screen_rejects_hostile_datagrams_with_a_reason(datagram: bytes, reason: str) -> None:
    source, ctx = screening_source()
    assert not source.screen(datagram, ("10.0.0.1", 5000))
    assert len(ctx.rejects) == 1 and ctx.rejects[0].startswith(reason), ctx.rejects
    assert source.counters()["screened_out"] == 1


def test_a_flood_is_counted_but_lands_only_the_budget() -> None:
    source, ctx = screening_source()
    for i in range(1000):
        source.screen(b"flood %d" % i, ("10.0.0.1", 5000))
    counters = source.counters()
    assert counters["screened_out"] == 1000
    assert len(ctx.rejects) <= 4 and counters["rejects_suppressed"] >= 996


def test_reject_budget_refills_at_its_rate() -> None:
    now = [0.0]
    budget = RejectBudget(2, burst=2, clock=lambda: now[0])
    assert [budget.allow() for _ in range(3)] == [True, True, False]
    now[0] = 0.5
    assert budget.allow() and not budget.allow()
    assert budget.suppressed == 2
