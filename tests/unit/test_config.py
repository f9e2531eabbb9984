from __future__ import annotations

from pathlib import Path

import pytest

from citylake.config import ConfigError, load_config
from citylake.ingest.mqtt.config import MqttSourceConfig
from citylake.ingest.registry import build_sources

REPO = Path(__file__).resolve().parents[2]


def test_sample_city_yaml_loads_with_its_sources() -> None:
    loaded = load_config(REPO / "city.yaml")
    assert loaded.config.site == "demo-site"
    assert loaded.config.data_dir == (REPO / "var").resolve()
    sources = build_sources(loaded)
    assert [s.name for s in sources] == ["city-sensors"]
    assert isinstance(sources[0].config, MqttSourceConfig)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(text)
    return path


def test_error_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "site: s1\npipelines:\n  flink:\n    parallelism: zero\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "line 4: pipelines.flink.parallelism" in message
    assert "valid integer" in message


def test_unknown_key_is_named_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "site: s1\ndata_dri: ./x\n")
    with pytest.raises(ConfigError, match=r"line 2: data_dri: unknown key"):
        load_config(path)


def test_adapter_keys_are_checked_by_the_adapter_model_with_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "site: s1\nsources:\n  - name: m\n    type: mqtt\n    url: mqtt://127.0.0.1:1883\n"
        "    qos: 2\n    topics:\n      - template: city/+/x\n",
    )
    with pytest.raises(ConfigError) as info:
        build_sources(load_config(path))
    message = str(info.value)
    assert "line 6: sources[0].qos" in message
    assert "line 8: sources[0].topics[0].template" in message
    assert "use {name} levels instead of + and #" in message


def test_unknown_source_type_lists_known_types(tmp_path: Path) -> None:
    path = write(tmp_path, "site: s1\nsources:\n  - name: x\n    type: zigbee\n    url: tcp://h:1\n")
    with pytest.raises(
        ConfigError, match=r"line 4: sources\[0\].type: no adapter for type 'zigbee' \(known: .*mqtt"
    ):
        build_sources(load_config(path))


def test_duplicate_source_names_refused(tmp_path: Path) -> None:
    source = "  - name: a\n    type: mqtt\n    url: mqtt://h:1\n"
    path = write(tmp_path, "site: s1\nsources:\n" + source + source)
    with pytest.raises(ConfigError, match="used twice"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: [unclosed\n", "(yaml)"),
        ("- a\n- b\n", "expected a mapping"),
        ("site: Bad Name!\n", "line 1: site"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --config"):
        load_config(tmp_path / "nope.yaml")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_bytes("site: 北京\n".encode("gb2312"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "city.yaml"
    path.write_text("site: s1\ndata_dir: ../data\n")
    assert load_config(path).config.data_dir == (tmp_path / "data").resolve()
