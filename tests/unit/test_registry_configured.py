"""The registry service knows devices from config only through the adapters
(entry points): no protocol is named in services/registry, and what it shows
for a source is what that source's adapter lands at start."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from citylake.config import load_config
from citylake.ingest.registry import adapter_class, adapter_types, build_sources
from citylake.services.registry.configured import configured_devices

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "services" / "registry"


def _protocol_names() -> set[str]:
    """Every adapter type and every protocol room of ingest/, in the spellings
    a table of protocols would use (``http_push``, ``http push``, ``opc ua``)."""
    rooms = {p.parent.name for p in (REPO / "ingest").glob("*/adapter.py")}
    names = set(adapter_types()) | rooms
    spelled = {n.replace("_", " ") for n in names} | {"opc ua", "pymodbus", "asyncua"}
    return names | spelled


def test_no_protocol_is_named_in_the_registry_service() -> None:
    pattern = re.compile(
        r"(?<![a-z0-9])("
        + "|".join(sorted(map(re.escape, _protocol_names()), key=len, reverse=True))
        + r")(?![a-z0-9])",
        re.IGNORECASE,
    )
    files = sorted(p for p in REGISTRY.rglob("*") if p.is_file() and p.suffix in {".py", ".md", ".sql"})
    assert files, REGISTRY
    named = [
        f"{path.relative_to(REPO)}:{number}: {match.group(0)}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for match in pattern.finditer(line)
    ]
    assert not named, (
        "services/registry names protocols (a protocol belongs in its ingest folder):\n" + "\n".join(named)
    )


def test_the_registry_shows_what_each_adapter_lands_for_every_sample(tmp_path: Path) -> None:
    # The samples' own text (the config loader reads YAML its own way).
    items = []
    for index, sample in enumerate(sorted((REPO / "ingest").glob("*/sample.yaml"))):
        text = re.sub(r"(?m)^name: *(\S+)", rf"name: \g<1>-{index}", sample.read_text())  # names may repeat
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        items.append("\n".join(["  - " + lines[0], *("    " + line for line in lines[1:])]))
    city = tmp_path / "city.yaml"
    city.write_text(f"site: s1\ndata_dir: {tmp_path / 'data'}\nsources:\n" + "\n".join(items) + "\n")
    loaded = load_config(city)
    landed = {
        (str(row["device_id"]), source.name): row
        for source in build_sources(loaded)
        for row in source.known_devices(0)
    }
    shown = {(d.device_id, d.source): d for d in configured_devices(loaded)}
    assert shown.keys() == landed.keys()
    # Every protocol that names devices in its sample is in the registry.
    named = {str(row["protocol"]) for row in landed.values()}
    assert len(named) >= 10, named
    for key, device in shown.items():
        row = landed[key]
        assert device.protocol == row["protocol"]
        attributes = json.loads(str(row["attributes"])) if row["attributes"] else {}
        attributes.pop("source", None)
        assert device.attributes == {**attributes, "enabled": True}


def test_configured_devices_answers_from_the_config_without_a_source() -> None:
    modbus = adapter_class("modbus")
    config = modbus.config_model.model_validate(
        yaml.safe_load((REPO / "ingest/modbus/sample.yaml").read_text())
    )
    rows = modbus.configured_devices(config, 7)
    assert [r["device_id"] for r in rows] == ["pump-north-1", "pump-north-2", "meter-north"]
    assert {r["first_seen"] for r in rows} == {7}
    assert "flow_rate" in json.loads(str(rows[0]["attributes"]))["metrics"]
