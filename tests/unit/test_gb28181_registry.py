"""Online/offline state with time driven by hand; config; scenario files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.device_id import is_device_id
from citylake.ingest.gb28181.registry import Event, Registry
from citylake_devstack.sipp import SCENARIOS, answers_path, scenario_path, sim_devices, write_injection

DEV = "34020000001320000001"
ADDR = ("127.0.0.1", 5070)


def kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_register_keepalive_timeout_and_return() -> None:
    registry = Registry(keepalive_interval_s=60, missed_keepalives=3)
    events, first = registry.register(DEV, "udp", ADDR, "<sip:x>", "c1", 3600, now=0)
    assert first and kinds(events) == ["register", "online"]
    assert registry.records[DEV].type == "ipc" and registry.records[DEV].civil_code == "34020000"
    # On time: a keepalive every interval keeps it online for a long while.
    for minute in range(1, 30):
        assert kinds(registry.keepalive(DEV, minute * 60_000, "OK")) == ["keepalive"]
        assert registry.sweep(minute * 60_000 + 59_999) == []
    last = 29 * 60_000
    assert registry.sweep(last + 180_000) == []  # exactly 3 intervals: not yet
    offline = registry.sweep(last + 180_001)
    assert kinds(offline) == ["offline"] and offline[0].attributes["reason"] == "missed keepalives"
    assert registry.sweep(last + 300_000) == []  # one transition, not one per sweep
    assert kinds(registry.keepalive(DEV, last + 400_000, "OK")) == ["keepalive", "online"]
    assert registry.records[DEV].status == "online"


def test_no_keepalive_at_all_counts_from_register() -> None:
    registry = Registry(keepalive_interval_s=1, missed_keepalives=3)
    registry.register(DEV, "udp", ADDR, "", "c", 3600, now=1000)
    assert registry.sweep(4000) == []
    assert kinds(registry.sweep(4001)) == ["offline"]


def test_refresh_and_expiry_and_unregister() -> None:
    registry = Registry(keepalive_interval_s=60, missed_keepalives=3)
    registry.register(DEV, "tcp", ADDR, "", "c", 10, now=0)
    events, first = registry.register(DEV, "tcp", ADDR, "", "c", 10, now=5_000)
    assert not first and kinds(events) == ["register"] and events[0].attributes["refresh"]
    assert registry.sweep(14_999) == []
    expired = registry.sweep(15_000)
    assert kinds(expired) == ["offline"] and expired[0].attributes["reason"] == "registration expired"
    assert not registry.is_registered(DEV)
    _, first = registry.register(DEV, "tcp", ADDR, "", "c", 10, now=20_000)
    assert first
    assert kinds(registry.unregister(DEV, 21_000)) == ["unregister", "offline"]
    assert kinds(registry.unregister(DEV, 22_000)) == ["unregister"]


def _config(**extra: object) -> dict[str, object]:
    return {
        "name": "video",
        "type": "gb28181",
        "url": "udp://0.0.0.0:5060",
        "platform_id": "34020000002000000001",
        "domain": "3402000000",
        "password": "pw",
        **extra,
    }


def test_config_defaults_and_sample() -> None:
    config = GB28181SourceConfig.model_validate(_config())
    assert config.listen_transports == ["udp"] and config.listen_port == 5060
    assert (config.keepalive_interval_s, config.missed_keepalives, config.digest_realm) == (
        60,
        3,
        "3402000000",
    )
    sample = Path(__file__).resolve().parents[2] / "ingest" / "gb28181" / "sample.yaml"
    loaded = GB28181SourceConfig.model_validate(yaml.safe_load(sample.read_text()))
    assert loaded.listen_transports == ["udp", "tcp"]
    assert GB28181SourceConfig.model_validate(_config(url="tcp://1.2.3.4:5061")).listen_transports == ["tcp"]


@pytest.mark.parametrize(
    "extra",
    [
        {"platform_id": "123"},
        {"domain": "34020000001"},
        {"url": "mqtt://h:1"},
        {"transports": ["sctp"]},
        {"timezone": "Mars/Olympus"},
        {"surprise": 1},
        {"register_expires_default": 100, "register_expires_max": 10},
    ],
)
def test_config_refuses(extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        GB28181SourceConfig.model_validate(_config(**extra))


@pytest.mark.parametrize(("folder", "text"), [(".", "区域入侵"), ("answers", "东门摄像机")])
def test_gb2312_scenario_is_the_utf8_one_in_gb2312(folder: str, text: str) -> None:
    utf8 = (SCENARIOS / folder / "device.xml").read_text(encoding="utf-8")
    raw = (SCENARIOS / folder / "device_gb2312.xml").read_bytes()
    gb = raw.decode("gb2312")
    if folder == "answers":
        gb = gb.replace(
            "../device_gb2312.xml (SIPp -oocsf): answers/device.xml\n     saved in GB2312 (this file)",
            "../device.xml (SIPp -oocsf)",
        )
    assert gb.replace(" (this file)", "") == utf8
    assert text.encode("gb2312") in raw


def test_every_device_scenario_has_its_answers() -> None:
    for name in ("device", "device_gb2312", "keepalive", "keepalive_loop"):
        found = answers_path(scenario_path(name))
        assert found is not None and found.exists(), name
    assert answers_path(scenario_path("wrong_password")) is None


def test_injection_file(tmp_path: Path) -> None:
    devices = sim_devices(2, "3402000000")
    assert devices[0].device_id == "34020000001187000001"
    assert devices[1].channels == ("34020000001317100002", "34020000001317200002", "34020000001317300002")
    assert len({c for d in devices for c in d.fields()}) == 8
    assert all(is_device_id(c) for d in devices for c in d.fields())
    with pytest.raises(ValueError, match="5 serial digits"):
        sim_devices(100_000, "3402000000")
    text = write_injection(tmp_path / "d.csv", devices, "pw").read_text().splitlines()
    assert text[0] == "SEQUENTIAL"
    assert text[1].endswith(";[authentication username=34020000001187000001 password=pw]")
    with pytest.raises(ValueError, match="password"):
        write_injection(tmp_path / "e.csv", devices, "a;b")
