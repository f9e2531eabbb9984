"""Attacks on the real sync receiver (`citylake sync serve` as a child process,
over HTTPS with a certificate the test makes), each of which must fail:

- an edge's key used on another site: 403, and that site's region copy stays;
- a file of text `ts`, and a file whose `site` column names another edge:
  refused at commit with the reason, nothing committed;
- slow uploads begun together beyond `incoming_max_bytes` (declared sizes count);
- a client that does not trust the region's CA cannot talk to it at all;
- a receiver off loopback without keys refuses to start.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from citylake.cli import app as cli
from citylake.config.models import SyncConfig
from citylake.lake import Lake
from citylake.schemas import DataLayout
from citylake.sync.sender import EdgeSync
from citylake_devstack import free_port
from citylake_devstack.process import CITYLAKE, ManagedProcess
from tests.selfsigned import ServerCertificate, make_server_certificate
from tests.synclake import CHECK_SQL, part_file

pytestmark = pytest.mark.integration

KEY_A = "edge-a-0123456789abcdef"
KEY_B = "edge-b-0123456789abcdef"
INCOMING_MAX = 1_000_000


class Region:
    def __init__(self, url: str, ca: Path, layout: DataLayout) -> None:
        self.url, self.ca, self.layout = url, ca, layout

    def client(self, key: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca))
        return httpx.Client(base_url=self.url, verify=context, headers={"X-API-Key": key}, timeout=30)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Region]:
    workdir = tmp_path_factory.mktemp("region")
    tls: ServerCertificate = make_server_certificate(workdir / "tls")
    keys = workdir / "sync-keys"  # as mounted from the Secret citylake-sync-keys
    keys.write_text(f"edge-a {KEY_A}\nedge-b {KEY_B}\n")
    port = free_port()
    sync = {
        "host": "127.0.0.1",
        "port": port,
        "keys_file": str(keys),
        "tls_cert_file": str(tls.cert),
        "tls_key_file": str(tls.key),
        "incoming_max_bytes": INCOMING_MAX,
        "max_chunk_bytes": 65536,
    }
    config = workdir / "region.yaml"
    layout = DataLayout(workdir / "var")
    config.write_text(yaml.safe_dump({"site": "region", "data_dir": str(layout.data_dir), "sync": sync}))
    argv = [*CITYLAKE, "sync", "serve", "--config", str(config)]
    process = ManagedProcess("sync-serve", argv, workdir / "serve.log").start()
    found = Region(f"https://127.0.0.1:{port}", tls.ca, layout)

    def healthy() -> bool:
        try:
            with found.client("") as http:
                return http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        process.wait_until(healthy, 60, "https /healthz")
        yield found
    finally:
        process.stop()


def _push(region: Region, edge: DataLayout, site: str, key: str) -> None:
    config = SyncConfig(region_url=region.url, api_key=key, tables=["readings"], retry_window_s=5)
    with region.client(key) as http:
        assert EdgeSync(edge, site, config, http).round().in_sync


def _rows(region: Region) -> tuple[object, ...]:
    lake = Lake(region.layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        assert row is not None
        return tuple(row)
    finally:
        lake.close()


def test_an_edge_cannot_touch_another_sites_region_copy(region: Region, tmp_path: Path) -> None:
    edge_a = DataLayout(tmp_path / "a")
    part_file(edge_a, 0, "a0", 0, 100, site="edge-a")
    _push(region, edge_a, "edge-a", KEY_A)
    before = _rows(region)
    assert before[0] == 100

    with region.client(KEY_B) as http:
        # B's key reads nothing of A's, and its empty commit would have
        # erased A's partition: refused, A's files stay.
        assert http.get("/v1/sync/sites/edge-a/tree").status_code == 403
        erase = http.post(
            "/v1/sync/sites/edge-a/tables/readings/commit", json={"partitions": {"date=2026-11-20": []}}
        )
        assert erase.status_code == 403 and "opens only its own site" in erase.json()["error"]
        assert http.get("/v1/sync/sites/edge-a/uploads").status_code == 403
    with region.client("not-a-key-at-all-000") as http:
        assert http.get("/v1/sync/sites/edge-a/tree").status_code == 401
        assert http.get("/metrics").status_code == 401
    assert _rows(region) == before


def _upload(http: httpx.Client, site: str, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    for offset in range(0, len(data), 65536):
        answer = http.patch(
            f"/v1/sync/sites/{site}/uploads/{sha}",
            params={"size": len(data), "offset": offset},
            content=data[offset : offset + 65536],
        )
        assert answer.status_code == 200, answer.text
    return sha


def _commit_one(http: httpx.Client, site: str, name: str, data: bytes) -> httpx.Response:
    sha = _upload(http, site, data)
    body = {"partitions": {"date=2026-11-25": [[name, len(data), sha]]}}
    return http.post(f"/v1/sync/sites/{site}/tables/readings/commit", json=body)


def _parquet(tmp_path: Path, rows: pa.Table) -> bytes:
    path = tmp_path / "bad.parquet"
    pq.write_table(rows, path)
    return path.read_bytes()


def test_uploads_of_the_wrong_shape_or_site_are_refused_at_commit(region: Region, tmp_path: Path) -> None:
    edge = DataLayout(tmp_path / "edge")
    good = part_file(edge, 5, "x", 0, 50, site="edge-a")
    rows = pq.read_table(good)
    before = _rows(region)
    text_ts = rows.set_column(rows.schema.get_field_index("ts"), "ts", pa.array(["noon"] * 50))
    other_site = rows.set_column(rows.schema.get_field_index("site"), "site", pa.array(["edge-b"] * 50))
    with region.client(KEY_A) as http:
        answer = _commit_one(http, "edge-a", "part-text-ts", _parquet(tmp_path, text_ts))
        assert answer.status_code == 422, answer.text
        assert "column 'ts' is string" in answer.json()["reason"]
        answer = _commit_one(http, "edge-a", "part-other-site", _parquet(tmp_path, other_site))
        assert answer.status_code == 422
        assert "rows of site 'edge-b' in an upload of site 'edge-a'" in answer.json()["reason"]
        answer = _commit_one(http, "edge-a", "part-noise", b"not parquet at all" * 100)
        assert answer.status_code == 422 and "not a readable Parquet file" in answer.json()["reason"]
        assert 'sync_rejected_total{status="422"} 3.0' in http.get("/metrics").text
    # Nothing of it reached the region's lake; every region query still runs.
    assert _rows(region) == before


def test_declared_sizes_bound_the_staging_area(region: Region) -> None:
    with region.client(KEY_B) as http:
        # Each upload declares 600 kB and sends 4 kB: on disk 8 kB, declared 1.2 MB.
        first = b"a" * 4096
        sha = hashlib.sha256(b"first").hexdigest()
        answer = http.patch(
            f"/v1/sync/sites/edge-b/uploads/{sha}", params={"size": 600_000, "offset": 0}, content=first
        )
        assert answer.status_code == 200
        sha2 = hashlib.sha256(b"second").hexdigest()
        answer = http.patch(
            f"/v1/sync/sites/edge-b/uploads/{sha2}", params={"size": 600_000, "offset": 0}, content=first
        )
        assert answer.status_code == 507 and "incoming_max_bytes" in answer.json()["error"]


def test_a_client_that_does_not_trust_the_region_cannot_connect(region: Region) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(region.url + "/healthz", timeout=10)
    with pytest.raises(httpx.HTTPError):
        httpx.get(region.url.replace("https", "http") + "/healthz", timeout=10)


def test_a_receiver_without_keys_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "open.yaml"
    config.write_text(yaml.safe_dump({"site": "r", "data_dir": str(tmp_path), "sync": {"host": "0.0.0.0"}}))
    # The command itself, in-process: it refuses before it binds anything.
    result = CliRunner().invoke(cli, ["sync", "serve", "--config", str(config), "--port", str(free_port())])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "would listen on 0.0.0.0 without keys" in said and "sync.site_keys" in said
