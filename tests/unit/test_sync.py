"""Edge → region sync: the Merkle tree, resumable uploads, mirrored compaction,
and the receiver's answers to bad and hostile input (clear 4xx, nothing committed)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from citylake.cli import app as cli
from citylake.config.models import SyncConfig
from citylake.lake import Lake
from citylake.lake.compaction import compact_table
from citylake.lake.manifest import TableLog
from citylake.lake.retention import retain_table, vacuum_table
from citylake.schemas import DataLayout
from citylake.sync import wire
from citylake.sync.bucket import TokenBucket
from citylake.sync.edge import HashCache, edge_lake
from citylake.sync.merkle import Leaf, TableTree, combine, differing, missing, partition_hash
from citylake.sync.names import InvalidName, SyncedName, check_file_name, check_leaf_name, origin_of
from citylake.sync.receiver import ReceiverSettings, create_app
from citylake.sync.region import Limits, OffsetMismatch, RegionStore
from citylake.sync.sender import EdgeSync, RegionClient, SyncFailed
from tests.synclake import CHECK_SQL, READINGS, part_file

SHA_A = "a" * 64


@pytest.fixture
def edge(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "edge")


@pytest.fixture
def region(tmp_path: Path) -> DataLayout:
    return DataLayout(tmp_path / "region")


CONFIG = SyncConfig(chunk_bytes=8192, max_chunk_bytes=16384, retry_max_s=0.01, retry_window_s=0.05)


class Recorder:
    """httpx event hooks: what the sender asked for."""

    def __init__(self, client: httpx.Client) -> None:
        self.requests: list[httpx.Request] = []
        client.event_hooks = {"request": [self.requests.append], "response": []}

    def paths(self, method: str, part: str) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == method and part in r.url.path]


@pytest.fixture
def receiver(region: DataLayout) -> Iterator[TestClient]:
    with TestClient(create_app(ReceiverSettings(region.data_dir, CONFIG))) as client:
        yield client


def check(layout: DataLayout) -> tuple[object, ...]:
    lake = Lake(layout)
    try:
        row = lake.cursor().execute(CHECK_SQL).fetchone()
        assert row is not None
        return tuple(row)
    finally:
        lake.close()


# -- the tree ------------------------------------------------------------------


def test_merkle_hashes_ignore_order_and_see_any_change() -> None:
    a, b = Leaf("part-a", 10, SHA_A), Leaf("part-b", 20, "b" * 64)
    assert partition_hash([a, b]) == partition_hash([b, a])
    assert partition_hash([a, b]) != partition_hash([a, Leaf("part-b", 21, "b" * 64)])
    assert partition_hash([a, b]) != partition_hash([a, Leaf("part-b", 20, "c" * 64)])
    assert partition_hash([a, b]) != partition_hash([a, Leaf("part-c", 20, "b" * 64)])
    one = TableTree.of({"date=2026-11-20": [a], "date=2026-11-21": [b], "date=2026-11-22": []})
    assert set(one.partitions) == {"date=2026-11-20", "date=2026-11-21"}, "empty partitions hash as absent"
    two = TableTree.of({"date=2026-11-20": [a], "date=2026-11-21": [a, b]})
    assert differing(one.partition_hashes(), two.partition_hashes()) == ["date=2026-11-21"]
    assert differing({"x": "1"}, {"y": "1"}) == ["x", "y"]
    assert missing([a, b], [a]) == [b]
    assert one.since(date(2026, 11, 21)).partitions.keys() == {"date=2026-11-21"}
    assert combine({}) == hashlib.sha256().hexdigest()


def test_synced_names_are_fixed_length_per_origin_and_parse_back() -> None:
    name = SyncedName("edge-a", SHA_A)
    assert str(name) == f"synced-edge-a.{SHA_A}.parquet"
    assert SyncedName.parse(str(name)) == name
    # A region's legacy name (with the edge's file name) still parses: origin and hash.
    legacy = SyncedName.parse(f"synced-edge-a.{SHA_A}.part-0")
    assert legacy is not None and legacy.canonical == name
    assert SyncedName.parse("part-0") is None and SyncedName.parse("synced-x.nothex.part") is None
    # The longest site's synced name is over the 110 of a plain name, and a region may list it.
    longest = str(SyncedName("e" * 63, SHA_A))
    assert len(longest) > 110 and check_leaf_name(longest) == longest
    with pytest.raises(InvalidName):
        check_file_name(longest)
    assert origin_of("region-s", longest) == "e" * 63 and origin_of("region-s", "part-0") == "region-s"
    for bad in ("../etc/passwd", "a/b", ".hidden", "x" * 111, "", "a\tb", "a\nb", "a..b", "%2e%2e"):
        with pytest.raises(InvalidName):
            check_file_name(bad)


def test_only_differing_partitions_are_listed_and_only_missing_files_sent(
    edge: DataLayout, region: DataLayout, receiver: TestClient
) -> None:
    for day in range(3):
        for i in range(2):
            part_file(edge, day, f"{day}-{i}", (day * 2 + i) * 100, 100)
    sync = EdgeSync(edge, "edge-a", CONFIG, receiver)
    first = sync.round()
    assert first.in_sync and first.counters.files_uploaded == 6 and first.counters.commits == 1
    recorder = Recorder(receiver)
    again = sync.round()
    assert again.in_sync and again.counters.files_uploaded == 0 and again.hashed_bytes == 0
    assert [r.url.path for r in recorder.requests] == ["/v1/sync/sites/edge-a/tree"], (
        "equal roots: one request"
    )
    recorder.requests.clear()
    new = part_file(edge, 1, "1-2", 600, 100)
    third = sync.round()
    assert third.in_sync and third.partitions_differing == 1
    (leaves,) = recorder.paths("POST", "/leaves")
    assert wire.loads(wire.decode(leaves.content, leaves.headers.get("content-encoding"), 1 << 20)) == {
        "partitions": ["date=2026-11-21"]
    }
    assert third.counters.files_uploaded == 1
    assert third.counters.file_bytes_uploaded == new.stat().st_size
    assert check(region) == check(edge) == (700, 700, float(sum(range(700))), 700)


def test_edge_compaction_is_mirrored_in_one_commit_and_region_compaction_leaves_synced_files(
    edge: DataLayout, region: DataLayout, receiver: TestClient
) -> None:
    for i in range(4):
        part_file(edge, 0, f"a-{i}", i * 100, 100)
    sync = EdgeSync(edge, "edge-a", CONFIG, receiver)
    assert sync.round().in_sync
    region_log = TableLog(region, READINGS)
    before = region_log.current()
    compact_table(edge, READINGS, min_files=2)
    report = sync.round()
    assert report.in_sync and report.counters.files_uploaded == 1
    after = region_log.current()
    assert after.version == before.version + 1 and after.operation == "sync"
    (compacted,) = after.added
    (edge_file,) = TableLog(edge, READINGS).snapshot().files
    edge_sha = hashlib.sha256((edge.lake(READINGS) / edge_file).read_bytes()).hexdigest()
    assert "compacted-" in edge_file and compacted.endswith(f"/synced-edge-a.{edge_sha}.parquet")
    assert after.removed_paths == before.added
    assert check(region) == (400, 400, float(sum(range(400))), 400)
    # The region's own compaction must not merge a site's mirror of its files.
    assert compact_table(region, READINGS, min_files=1).files_in == 0
    # Retention at the edge retires the partition; the region mirrors it.
    retain_table(edge, READINGS, keep_days=1, today=date(2026, 11, 25))
    assert sync.round().in_sync
    assert check(region) == (0, 0, 0, 0)


def test_two_edges_with_the_same_file_names_make_a_union(
    tmp_path: Path, region: DataLayout, receiver: TestClient
) -> None:
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    part_file(a, 0, "0", 0, 100, site="edge-a")
    part_file(b, 0, "0", 100, 100, site="edge-b")
    assert EdgeSync(a, "edge-a", CONFIG, receiver).round().in_sync
    assert EdgeSync(b, "edge-b", CONFIG, receiver).round().in_sync
    assert check(region) == (200, 200, float(sum(range(200))), 200)
    compact_table(a, READINGS, min_files=1)  # one file: nothing to merge
    part_file(a, 0, "1", 200, 50, site="edge-a")
    compact_table(a, READINGS, min_files=2)
    assert EdgeSync(a, "edge-a", CONFIG, receiver).round().in_sync
    assert check(region) == (250, 250, float(sum(range(250))), 250), "b's files are untouched by a's sync"


def test_region_retention_is_respected_by_the_edge(
    edge: DataLayout, region: DataLayout, receiver: TestClient
) -> None:
    part_file(edge, 0, "old", 0, 100)
    part_file(edge, 4, "new", 100, 100)
    sync = EdgeSync(edge, "edge-a", CONFIG, receiver)
    assert sync.round().in_sync
    retain_table(region, READINGS, keep_days=2, today=date(2026, 11, 25))
    report = sync.round()
    assert report.in_sync and report.counters.files_uploaded == 0, "a retired partition is not shipped again"
    assert check(region)[0] == 100


# -- resumable uploads -----------------------------------------------------------


class CutAfter:
    """Response hook: after ``n`` PATCHes the connection 'breaks' once the
    region has already written the chunk (the answer is lost)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.patches = 0

    def __call__(self, response: httpx.Response) -> None:
        if response.request.method == "PATCH":
            self.patches += 1
            if self.patches == self.n:
                raise httpx.ReadError("connection reset", request=response.request)


def test_a_cut_upload_resumes_from_the_bytes_the_region_has(
    edge: DataLayout, region: DataLayout, receiver: TestClient
) -> None:
    path = part_file(edge, 0, "big", 0, 20_000)
    size = path.stat().st_size
    assert size > 8 * CONFIG.chunk_bytes
    cut = CutAfter(3)
    receiver.event_hooks = {"request": [], "response": [cut]}
    sync = EdgeSync(edge, "edge-a", CONFIG, receiver, sleep=lambda s: None)
    report = sync.round()
    assert report.in_sync and report.counters.retries == 1
    # The chunk whose answer was lost is not sent again: the region had it.
    assert report.counters.payload_bytes <= size
    assert report.counters.resumed_bytes == CONFIG.chunk_bytes


def test_a_restarted_transfer_continues_from_the_region_offset(region: DataLayout, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    sha = hashlib.sha256(data).hexdigest()
    limits = Limits(max_chunk_bytes=16384, max_file_bytes=1 << 20, incoming_max_bytes=1 << 20)
    store = RegionStore(region, limits)
    assert store.append("edge-a", sha, len(data), 0, data[:16384]).offset == 16384
    assert store.append("edge-a", sha, len(data), 16384, data[16384:20000]).offset == 20000
    # A new receiver process (same disk) knows the offset; a stale or repeated
    # chunk is refused with the offset to continue from.
    again = RegionStore(region, limits)
    assert again.upload_state("edge-a", sha, len(data)).offset == 20000
    with pytest.raises(OffsetMismatch) as refused:
        again.append("edge-a", sha, len(data), 16384, data[16384:20000])
    assert refused.value.details == {"offset": 20000}
    path = tmp_path / "f"
    path.write_bytes(data)
    with TestClient(create_app(ReceiverSettings(region.data_dir, CONFIG))) as client:
        sender = RegionClient(client, "edge-a", CONFIG)
        staged = sender.uploads()
        assert staged == {(sha, len(data)): 20000}
        assert sender.upload(Leaf("part-f", len(data), sha), path, staged[(sha, len(data))])
        assert sender.counters.resumed_bytes == 20000
        assert sender.counters.payload_bytes == len(data) - 20000
        # A sender that did not ask first is told the offset by its first chunk.
        other = os.urandom(30_000)
        other_sha = hashlib.sha256(other).hexdigest()
        again.append("edge-a", other_sha, len(other), 0, other[:10_000])
        path.write_bytes(other)
        late = RegionClient(client, "edge-a", CONFIG)
        assert late.upload(Leaf("part-g", len(other), other_sha), path)
        assert late.counters.resumed_bytes == 10_000
    assert again.upload_state("edge-a", sha, len(data)).complete


def test_token_bucket_holds_the_rate() -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    bucket = TokenBucket(rate=1000, burst=100, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        bucket.take(100)
    # 5,000 bytes at 1,000 B/s with a 100-byte burst: 4.9 s.
    assert now[0] == pytest.approx(4.9)
    assert bucket.take(5000) == pytest.approx(5.0), "a take larger than the burst waits for all of it"


@pytest.mark.parametrize(("codec", "level"), [("zstd-9", 9), ("zstd-1", 1), ("none", None)])
def test_uploads_use_the_links_codec(
    tmp_path: Path, edge: DataLayout, region: DataLayout, codec: str, level: int | None
) -> None:
    """sync.wire_codec decides the chunks' encoding on this sender's link: the
    level's bytes where it pays, none at all with ``none``."""
    path = part_file(edge, 0, "0", 0, 3000)
    pq.write_table(pq.read_table(path), path, compression="none")  # bytes that compress
    chunk = path.read_bytes()[: CONFIG.chunk_bytes]
    config = CONFIG.model_copy(update={"wire_codec": codec})
    with TestClient(create_app(ReceiverSettings(region.data_dir, config))) as client:
        recorder = Recorder(client)
        assert EdgeSync(edge, "edge-a", config, client).round().in_sync
    first = recorder.paths("PATCH", "/uploads/")[0]
    if level is None:
        assert "content-encoding" not in first.headers and first.content == chunk
    else:
        assert first.headers["content-encoding"] == "zstd"
        assert first.content == wire.compress(chunk, level), f"not level {level}"
    assert check(region) == check(edge)


def test_wire_codec_is_checked() -> None:
    with pytest.raises(ValueError, match="wire_codec"):
        SyncConfig(wire_codec="lz4")
    assert wire.codec_level("zstd-19") == 19 and wire.codec_level("none") is None


def test_wire_compresses_json_but_not_zstd_parquet_and_bounds_decoding(edge: DataLayout) -> None:
    document = wire.dumps({"leaves": [[f"part-{i}", i, SHA_A] for i in range(200)]})
    packed, encoding = wire.maybe_compress(document)
    assert encoding == "zstd" and len(packed) < len(document) / 5
    assert wire.decode(packed, encoding, len(document)) == document
    noise = os.urandom(100_000)
    assert wire.maybe_compress(noise) == (noise, None), "compressed data goes as it is"
    parquet = part_file(edge, 0, "p", 0, 5000).read_bytes()
    body, encoding = wire.maybe_compress(parquet)
    assert encoding is None or len(body) <= 0.9 * len(parquet), "compressed only where it pays"
    bomb = wire.compress(b"\0" * 10_000_000)
    with pytest.raises(wire.BodyTooLarge):
        wire.decode(bomb, "zstd", 1_000_000)
    with pytest.raises(wire.BadEncoding):
        wire.decode(b"not zstd", "zstd", 100)
    with pytest.raises(wire.BadEncoding):
        wire.decode(b"x", "br", 100)


def test_hash_cache_reads_each_file_once(edge: DataLayout) -> None:
    part_file(edge, 0, "a", 0, 100)
    cache = HashCache(edge.data_dir / "sync" / "hashes.json")
    first = edge_lake(edge, [READINGS], cache)
    assert cache.hashed_bytes == first.tree.bytes > 0
    again = edge_lake(edge, [READINGS], HashCache(edge.data_dir / "sync" / "hashes.json"))
    assert again.tree.root == first.tree.root
    cache2 = HashCache(edge.data_dir / "sync" / "hashes.json")
    edge_lake(edge, [READINGS], cache2)
    assert cache2.hashed_bytes == 0


# -- bad and hostile input: clear 4xx, nothing committed ---------------------------


def upload(
    client: TestClient, data: bytes, sha: str | None = None, offset: int = 0, **headers: str
) -> httpx.Response:
    sha = sha or hashlib.sha256(data).hexdigest()
    answer: httpx.Response = client.patch(
        f"/v1/sync/sites/edge-a/uploads/{sha}",
        params={"size": len(data), "offset": offset},
        content=data,
        headers=headers,
    )
    return answer


def commit(
    client: TestClient, partitions: dict[str, list[list[object]]], table: str = "readings"
) -> httpx.Response:
    answer: httpx.Response = client.post(
        f"/v1/sync/sites/edge-a/tables/{table}/commit", json={"partitions": partitions}
    )
    return answer


def nothing_committed(region: DataLayout) -> None:
    assert TableLog(region, READINGS).versions() == []
    lake_dir = region.lake(READINGS)
    assert not lake_dir.exists() or not any(lake_dir.rglob("synced-*"))


def test_wrong_sha_is_refused_and_discarded(region: DataLayout, receiver: TestClient) -> None:
    data = os.urandom(3000)
    answer = upload(receiver, data, sha="0" * 64)
    assert answer.status_code == 422
    assert "hash to sha256" in answer.json()["error"] and answer.json()["offset"] == 0
    assert not any((region.data_dir / "sync" / "incoming").rglob("*")) or not any(
        p.is_file() for p in (region.data_dir / "sync" / "incoming").rglob("*")
    )
    refused = commit(receiver, {"date=2026-11-20": [["part-x", 3000, "0" * 64]]})
    assert refused.status_code == 409 and "not uploaded" in refused.json()["error"]
    nothing_committed(region)


@pytest.mark.parametrize(
    ("name", "partition"),
    [
        ("../../../etc/passwd", "date=2026-11-20"),
        ("a/b", "date=2026-11-20"),
        (".part-hidden", "date=2026-11-20"),
        ("x" * 200, "date=2026-11-20"),
        ("part-ok", "../../etc"),
        ("part-ok", "date=2026-13-45"),
        ("part-ok", ""),
        ("part-ok", "date=2026-11-20/../../x"),
    ],
)
def test_path_traversal_and_bad_names_are_refused(
    region: DataLayout, receiver: TestClient, name: str, partition: str
) -> None:
    data = os.urandom(100)
    assert upload(receiver, data).status_code == 200
    answer = commit(receiver, {partition: [[name, 100, hashlib.sha256(data).hexdigest()]]})
    assert answer.status_code == 422, answer.text
    assert "nothing was committed" in answer.json()["error"]
    nothing_committed(region)


def test_oversized_chunks_and_bombs_are_refused(region: DataLayout, receiver: TestClient) -> None:
    big = os.urandom(CONFIG.max_chunk_bytes + 1)
    answer = upload(receiver, big)
    assert answer.status_code == 413 and "max_chunk_bytes" in answer.json()["error"]
    bomb = wire.compress(b"\0" * 1_000_000)
    answer = receiver.patch(
        f"/v1/sync/sites/edge-a/uploads/{SHA_A}",
        params={"size": 1_000_000, "offset": 0},
        content=bomb,
        headers={"Content-Encoding": "zstd"},
    )
    assert answer.status_code == 413
    past = upload(receiver, os.urandom(10), sha=SHA_A, offset=5)
    assert past.status_code == 422 and "runs past the file's 10 bytes" in past.json()["error"]
    ahead = receiver.patch(
        f"/v1/sync/sites/edge-a/uploads/{SHA_A}", params={"size": 100, "offset": 50}, content=b"x" * 10
    )
    assert ahead.status_code == 409 and ahead.json()["offset"] == 0, "a gap is refused with the offset"
    huge = receiver.patch(
        f"/v1/sync/sites/edge-a/uploads/{SHA_A}", params={"size": 10**13, "offset": 0}, content=b"x"
    )
    assert huge.status_code == 413 and "max_file_bytes" in huge.json()["error"]
    nothing_committed(region)


def test_unknown_tables_bad_sites_and_bad_bodies_get_clear_errors(
    region: DataLayout, receiver: TestClient
) -> None:
    answer = commit(receiver, {}, table="nonsense")
    assert answer.status_code == 404 and "unknown table 'nonsense'" in answer.json()["error"]
    assert receiver.get("/v1/sync/sites/edge-a/tables/nonsense/partitions").status_code == 404
    assert receiver.get("/v1/sync/sites/Bad.Site/tree").status_code == 422
    assert receiver.get("/v1/sync/sites/edge-a/uploads/nothex", params={"size": 1}).status_code == 422
    no_size = receiver.get(f"/v1/sync/sites/edge-a/uploads/{SHA_A}")
    assert no_size.status_code == 422 and "query.size: Field required" in no_size.json()["error"]
    answer = receiver.post(
        "/v1/sync/sites/edge-a/tables/readings/commit", content=b"{not json", headers={"Content-Type": "x"}
    )
    assert answer.status_code == 422 and "invalid request body" in answer.json()["error"]
    answer = receiver.post("/v1/sync/sites/edge-a/tables/readings/commit", json={"partitions": {"x": 1}})
    assert answer.status_code == 422
    nothing_committed(region)


def test_keys_and_sites_are_enforced(region: DataLayout) -> None:
    config = SyncConfig(site_keys={"edge-a": ["k1"], "edge-b": ["k2"]}, sites=["edge-a"])
    with TestClient(create_app(ReceiverSettings(region.data_dir, config))) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/sync/sites/edge-a/tree").status_code == 401
        assert client.get("/v1/sync/sites/edge-a/tree", headers={"X-API-Key": "k1"}).status_code == 200
        refused = client.get("/v1/sync/sites/edge-b/tree", headers={"X-API-Key": "k1"})
        assert refused.status_code == 403 and "key of site 'edge-b'" in refused.json()["error"]
        refused = client.get("/v1/sync/sites/edge-b/tree", headers={"X-API-Key": "k2"})
        assert refused.status_code == 403 and "sync.sites" in refused.json()["error"]
        assert client.get("/openapi.json").status_code == 404


def test_shared_sync_keys_are_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match=r"sync\.api_keys was replaced by sync\.site_keys"):
        SyncConfig.model_validate({"api_keys": ["k1"]})


def test_a_commit_missing_one_file_changes_nothing(
    edge: DataLayout, region: DataLayout, receiver: TestClient
) -> None:
    one = os.urandom(500)
    assert upload(receiver, one).status_code == 200
    answer = commit(
        receiver,
        {
            "date=2026-11-20": [["part-1", 500, hashlib.sha256(one).hexdigest()]],
            "date=2026-11-21": [["part-2", 10, SHA_A]],
        },
    )
    assert answer.status_code == 409 and answer.json()["missing"] == [f"part-2 ({SHA_A})"]
    nothing_committed(region)


def test_vacuum_deletes_synced_files_no_commit_names(region: DataLayout) -> None:
    partition = region.lake(READINGS) / "date=2026-11-20"
    partition.mkdir(parents=True)
    orphan = partition / f"synced-edge-a.{SHA_A}.part-0"
    orphan.write_bytes(b"left by a commit that crashed before its log write")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    assert vacuum_table(region, READINGS, grace=timedelta(minutes=10)).files_deleted == 1
    assert not orphan.exists()


def test_sync_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    for command in (["sync", "serve", "--help"], ["sync", "push", "--help"]):
        done = runner.invoke(cli, command)
        assert done.exit_code == 0 and "--config" in done.output, done.output
    config = tmp_path / "city.yaml"
    config.write_text(f"site: edge-a\ndata_dir: {tmp_path / 'data'}\n")
    done = runner.invoke(cli, ["sync", "push", "-c", str(config)])
    assert done.exit_code == 2 and "sync.region_url" in done.output
    config.write_text(f"site: edge-a\ndata_dir: {tmp_path / 'data'}\nsync:\n  region_url: ftp://x\n")
    done = runner.invoke(cli, ["sync", "push", "-c", str(config)])
    assert done.exit_code == 2 and "region_url" in done.output


# -- three tiers: edge -> region -> centre ------------------------------------------

CENTRE_CONFIG = CONFIG.model_copy(update={"regions": {"region-s": ["edge-a", "edge-b"]}})


def test_the_centre_counts_each_reading_once_whatever_path_it_took(tmp_path: Path) -> None:
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    region, centre = DataLayout(tmp_path / "region"), DataLayout(tmp_path / "centre")
    for i in range(3):
        part_file(a, 0, f"{i}", i * 100, 100, site="edge-a")
        part_file(b, 0, f"{i}", 1000 + i * 100, 100, site="edge-b")
    union = (600, 600, float(sum(range(300)) + sum(range(1000, 1300))), 600)
    with (
        TestClient(create_app(ReceiverSettings(region.data_dir, CONFIG))) as to_region,
        TestClient(create_app(ReceiverSettings(centre.data_dir, CENTRE_CONFIG))) as to_centre,
    ):
        for layout, site in ((a, "edge-a"), (b, "edge-b")):
            assert EdgeSync(layout, site, CONFIG, to_region).round().in_sync
        up = EdgeSync(region, "region-s", CONFIG, to_centre)
        report = up.round()
        assert report.in_sync and report.origins == {"edge-a": 3, "edge-b": 3}
        assert check(centre) == union
        # The region's names are the centre's: one file per (origin, sha256).
        centre_files = TableLog(centre, READINGS).snapshot().files
        assert sorted(f.rsplit("/", 1)[1] for f in centre_files) == sorted(
            f.rsplit("/", 1)[1] for f in TableLog(region, READINGS).snapshot().files
        )
        # edge-a also pushes straight to the centre: its files are there once.
        direct = EdgeSync(a, "edge-a", CONFIG, to_centre)
        assert direct.round().in_sync and check(centre) == union
        # edge-a compacts and tells the centre first; the region, behind, is in
        # sync with what it said and ships nothing; then it catches up.
        compact_table(a, READINGS, min_files=2)
        assert direct.round().in_sync and check(centre) == union
        assert up.round().counters.files_uploaded == 0 and check(centre) == union
        # edge-b writes more; the region ships it with its older view of edge-a's
        # partition, which must not bring edge-a's replaced files back.
        part_file(b, 0, "3", 1300, 100, site="edge-b")
        union = (700, 700, float(sum(range(300)) + sum(range(1000, 1400))), 700)
        assert EdgeSync(b, "edge-b", CONFIG, to_region).round().in_sync
        assert up.round().in_sync and check(centre) == union
        edge_a_files = [f for f in TableLog(centre, READINGS).snapshot().files if "/synced-edge-a." in f]
        assert len(edge_a_files) == 1, "the centre keeps edge-a's compacted file, the newer snapshot"
        assert EdgeSync(a, "edge-a", CONFIG, to_region).round().in_sync
        caught_up = up.round()
        assert caught_up.in_sync and caught_up.origins == {"edge-a": 1, "edge-b": 4}
        assert check(centre) == union
        # Rounds again (a retry of everything): nothing changes.
        before = TableLog(centre, READINGS).current().version
        assert up.round().counters.commits == 0 and direct.round().counters.commits == 0
        assert TableLog(centre, READINGS).current().version == before and check(centre) == union


def test_a_region_writes_only_its_sites_and_an_edge_only_its_own(tmp_path: Path) -> None:
    a, b = DataLayout(tmp_path / "a"), DataLayout(tmp_path / "b")
    region, centre = DataLayout(tmp_path / "region"), DataLayout(tmp_path / "centre")
    part_file(a, 0, "0", 0, 100, site="edge-a")
    part_file(b, 0, "0", 100, 100, site="edge-b")
    only_a = CONFIG.model_copy(update={"regions": {"region-s": ["edge-a"]}})
    with (
        TestClient(create_app(ReceiverSettings(region.data_dir, CONFIG))) as to_region,
        TestClient(create_app(ReceiverSettings(centre.data_dir, only_a))) as to_centre,
    ):
        for layout, site in ((a, "edge-a"), (b, "edge-b")):
            assert EdgeSync(layout, site, CONFIG, to_region).round().in_sync
        with pytest.raises(SyncFailed, match=r"403 .*data of site 'edge-b'.*sync.regions.region-s"):
            EdgeSync(region, "region-s", CONFIG, to_centre).round()
        assert not TableLog(centre, READINGS).snapshot().files, "nothing was committed"
        # An edge cannot pass a file off as another site's by its name.
        name = TableLog(region, READINGS).snapshot().files[0]
        sha = name.rsplit("/", 1)[1].split(".")[1]
        refused = to_centre.post(
            "/v1/sync/sites/edge-c/tables/readings/commit",
            json={"partitions": {"date=2026-11-20": [[name.rsplit("/", 1)[1], 10, sha]]}},
        )
        assert refused.status_code == 403 and refused.json()["origin"] in ("edge-a", "edge-b")


def test_chunk_encoder_stops_compressing_once_a_chunk_does_not_pay() -> None:
    encoder = wire.ChunkEncoder(3)
    text = b"readings " * 4096
    assert encoder.encode(text)[1] == wire.ZSTD
    noise = os.urandom(len(text))
    assert encoder.encode(noise) == (noise, None)
    assert encoder.encode(text) == (text, None), "a file that stopped paying is sent as it is"
    assert wire.ChunkEncoder(None).encode(text) == (text, None)
