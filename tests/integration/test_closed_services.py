"""Closed by default, against the real services (`citylake serve` as a child
process): each test is an attack that must fail.

- a read key cannot change alert rules (403), a write key can;
- without a key, /openapi.json and /docs are 401, as is every route but /healthz;
- keys come from a keys file (a mounted Secret), not only from city.yaml;
- made-up HTTP methods do not grow /metrics' label set;
- a service bound off loopback without keys refuses to start and says what to do.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from citylake.cli import app as cli
from citylake_devstack import free_port, start_service

pytestmark = pytest.mark.integration

WRITE_KEY = "w-0123456789abcdef-write"
READ_KEY = "r-0123456789abcdef-read"
RULE = {"name": "hot", "metric": "temperature", "above": 30, "severity": "warning"}


def _config(tmp_path: Path, services: dict[str, object]) -> Path:
    path = tmp_path / "city.yaml"
    path.write_text(
        yaml.safe_dump({"site": "closed", "data_dir": str(tmp_path / "var"), "services": services})
    )
    return path


def test_scopes_docs_and_metric_labels_on_the_real_alerts_service(tmp_path: Path) -> None:
    keys = tmp_path / "alerts-keys"
    keys.write_text(f"# mounted from the Secret citylake-keys\nwrite {WRITE_KEY}\nread {READ_KEY}\n")
    keys.chmod(0o600)
    config = _config(tmp_path, {"alerts": {"keys_file": str(keys)}})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with start_service("alerts", config, port, tmp_path), httpx.Client(base_url=base, timeout=10) as http:
        # No key: nothing but /healthz, and no map of the API either.
        for path in ("/v1/rules", "/metrics", "/openapi.json", "/docs", "/redoc"):
            assert http.get(path).status_code == 401, path
        assert http.get("/openapi.json", headers={"X-API-Key": "guessed-key-000000"}).status_code == 401
        assert http.get("/openapi.json", headers={"X-API-Key": READ_KEY}).status_code == 200

        # The read key reads, and cannot create, replace or delete a rule.
        read = {"X-API-Key": READ_KEY}
        assert http.get("/v1/rules", headers=read).status_code == 200
        refused = http.post("/v1/rules", json=RULE, headers=read)
        assert refused.status_code == 403, refused.text
        assert "write scope" in refused.json()["detail"]
        assert http.put("/v1/rules/hot", json=RULE, headers=read).status_code == 403
        assert [r["name"] for r in http.get("/v1/rules", headers=read).json()["rules"]] == []

        # The write key does what the read key could not.
        write = {"X-API-Key": WRITE_KEY}
        assert http.post("/v1/rules", json=RULE, headers=write).status_code == 201
        assert http.delete("/v1/rules/hot", headers=read).status_code == 403
        assert [r["name"] for r in http.get("/v1/rules", headers=read).json()["rules"]] == ["hot"]

        # Methods the client makes up share one label.
        for i in range(20):
            http.request(f"ATTACK{i}", "/v1/rules", headers=read)
        metrics = http.get("/metrics", headers=read).text
        assert "ATTACK" not in metrics
        assert 'method="other"' in metrics


def _serve(config: Path, *args: str) -> tuple[int, str]:
    # The command itself, in-process: it refuses before it binds anything.
    argv = ["serve", *args, "--config", str(config), "--port", str(free_port())]
    result = CliRunner().invoke(cli, argv)
    return result.exit_code, " ".join(result.output.split())


def test_a_service_without_keys_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    config = _config(tmp_path, {"query": {"host": "0.0.0.0"}})
    code, said = _serve(config, "query")
    assert code == 1, said
    assert "would listen on 0.0.0.0 without keys" in said
    assert "services.query.api_keys" in said and "allow_open: true" in said
    # The --host flag is checked, not only city.yaml.
    loopback = _config(tmp_path, {"registry": {}})
    code, said = _serve(loopback, "registry", "--host", "0.0.0.0")
    assert code == 1 and "would listen on 0.0.0.0" in said
