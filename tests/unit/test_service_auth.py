"""Key scopes, keys files and the open-bind refusal (services/auth.py, citylake/config/exposure.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylake.config.exposure import OpenBindRefused, check_exposure, is_loopback
from citylake.services.auth import KeyFileError, KeyRing, Scope, read_keys_file
from citylake.services.observability import method_label


def test_a_read_key_reads_and_only_a_write_key_writes() -> None:
    ring = KeyRing.of(write=["w" * 20], read=["r" * 20])
    assert ring.allows("r" * 20, Scope.READ) and not ring.allows("r" * 20, Scope.WRITE)
    assert ring.allows("w" * 20, Scope.READ) and ring.allows("w" * 20, Scope.WRITE)
    assert not ring.allows(None, Scope.READ) and not ring.allows("x" * 20, Scope.READ)
    assert KeyRing().allows(None, Scope.WRITE)  # no keys: open (refused off loopback at start)


def test_a_keys_file_holds_scoped_keys_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# comment\n\nwrite " + "w" * 16 + "\nread " + "r" * 16 + "\n")
    ring = read_keys_file(path)
    assert ring.write == (b"w" * 16,) and ring.read == (b"r" * 16,)
    path.write_text("read short\n")
    with pytest.raises(KeyFileError, match=r"keys:1: expected `read <key>`"):
        read_keys_file(path)
    path.write_text("admin " + "a" * 20 + "\n")
    with pytest.raises(KeyFileError, match="keys:1"):
        read_keys_file(path)
    with pytest.raises(KeyFileError, match="cannot read the keys file"):
        read_keys_file(tmp_path / "missing")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_is_loopback(host: str) -> None:
    assert is_loopback(host)
    check_exposure("x", host, protected=False, allow_open=False, how_to_protect="keys")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "edge.example"])
def test_off_loopback_without_keys_is_refused_unless_told_open(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(OpenBindRefused, match=r"without keys.*Set services.query.api_keys.*allow_open: true"):
        check_exposure(
            "query", host, protected=False, allow_open=False, how_to_protect="services.query.api_keys"
        )
    check_exposure("query", host, protected=True, allow_open=False, how_to_protect="k")
    check_exposure("query", host, protected=False, allow_open=True, how_to_protect="k")


def test_the_method_label_is_a_closed_set() -> None:
    assert method_label("GET") == "GET" and method_label("DELETE") == "DELETE"
    assert method_label("ATTACK") == "other" and method_label("get") == "other"


def test_a_config_value_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from citylake.config import load_config
    from citylake.sync.credentials import CredentialsError, edge_key

    path = tmp_path / "city.yaml"
    path.write_text(
        "site: s\nsync:\n  api_key: ${CITYLAKE_SYNC_KEY}\n"
        "services:\n  query:\n    api_keys:\n      - ${Q_KEY}\n"
    )
    monkeypatch.delenv("CITYLAKE_SYNC_KEY", raising=False)
    monkeypatch.delenv("Q_KEY", raising=False)
    unset = load_config(path).config
    # A pod without the variable loads the file; what uses the value as a secret refuses it.
    with pytest.raises(CredentialsError, match=r"sync.api_key is '\$\{CITYLAKE_SYNC_KEY\}'"):
        edge_key(unset.sync)
    with pytest.raises(KeyFileError, match="set its environment variable"):
        KeyRing.of(unset.services.query.api_keys)
    monkeypatch.setenv("CITYLAKE_SYNC_KEY", "from-a-secret-0123456789")
    monkeypatch.setenv("Q_KEY", "query-key-0123456789")
    loaded = load_config(path).config
    assert edge_key(loaded.sync) == "from-a-secret-0123456789"
    assert loaded.services.query.api_keys == ["query-key-0123456789"]
