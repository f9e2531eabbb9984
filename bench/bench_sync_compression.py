"""Which wire codec pays for sync uploads, per link: bytes and one core's CPU
per MB of real lake files, for zstd levels 1, 3 and 9, Snappy, LZ4 and none.

The lake files are made the way a site makes them: readings of a simulated
city (random-walk sensor values at 0.1 resolution, meter counters, a status
text now and then) go through ingest's ``ColumnBatcher`` and
``LandingWriter`` into landing files, the real ``readings`` Flink job
(PyFlink, batch mode) writes the lake's part files from them, and the real
compaction (``compact_table``) merges a day's part files into one sorted file:
the two kinds of file a sync ships (compaction's own ``write_sorted``). Or ``--lake DIR`` measures an existing
site's lake. Each file is cut into ``sync.chunk_bytes`` chunks (the sender
compresses chunk by chunk), and each codec encodes and decodes every chunk;
CPU time is ``process_time`` on one thread, the best of ``--repeat`` runs per
file (the machine is shared: the best run is the least disturbed).

A link's cost of one MB of lake file is its encode time at the sender, its
compressed bytes at the link's rate and its decode time at the receiver
(sequential: the sender does not overlap them). The codec with the least
cost is that link's pick.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_sync_compression.py [--devices 2000 --minutes 60]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pyarrow as pa
import zstandard

from citylake.config import CityConfig, FlinkConfig, PipelinesConfig, SourceConfig
from citylake.config.models import SyncConfig
from citylake.ingest.batcher import ColumnBatcher
from citylake.ingest.landing import LandingWriter
from citylake.lake.compaction import write_sorted
from citylake.lake.manifest import TableLog
from citylake.schemas import DataLayout, table
from citylake_devstack.scalereport.summary import quantile

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
MB = 1024 * 1024
# Links a sync crosses (bytes per second of HTTP body): the edge's uplink as
# the network tests shape it (2 Mbit/s tbf), a region's WAN to the centre,
# and a LAN (region and centre in one data centre, or a test on one host).
LINKS = {"edge uplink 2 Mbit/s": 250_000, "region WAN 100 Mbit/s": 12_500_000, "LAN 1 Gbit/s": 125_000_000}


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes, int], bytes]


def _arrow(name: str) -> Codec:
    codec = pa.Codec(name)
    return Codec(
        name,
        lambda data: codec.compress(data, asbytes=True),
        lambda data, size: codec.decompress(data, decompressed_size=size, asbytes=True),
    )


def _zstd(level: int) -> Codec:
    # The sync's own zstd (python-zstandard), as sync/wire.py uses it.
    compressor = zstandard.ZstdCompressor(level=level)
    decompressor = zstandard.ZstdDecompressor()
    return Codec(f"zstd-{level}", compressor.compress, lambda data, size: decompressor.decompress(data))


CODECS = [
    Codec("none", lambda data: data, lambda data, size: data),
    _zstd(1),
    _zstd(3),
    _zstd(9),
    _arrow("snappy"),
    _arrow("lz4"),
]


def city_rows(devices: int, minutes: int, seed: int) -> list[list[dict[str, object]]]:
    """One list of readings per 10 s: each device's temperature and humidity
    (random walks, 0.1 resolution), an energy counter, and a status text
    from one device in fifty."""
    rng = random.Random(seed)
    temp = [rng.uniform(5, 30) for _ in range(devices)]
    humidity = [rng.uniform(30, 90) for _ in range(devices)]
    energy = [rng.uniform(0, 10_000) for _ in range(devices)]
    flushes = []
    for step in range(minutes * 6):
        at = T0 + timedelta(seconds=10 * step)
        ingest = at + timedelta(milliseconds=rng.randint(20, 900))
        rows: list[dict[str, object]] = []
        for d in range(devices):
            temp[d] += rng.gauss(0, 0.05)
            humidity[d] = min(100.0, max(0.0, humidity[d] + rng.gauss(0, 0.2)))
            energy[d] += rng.uniform(0, 0.02)
            device = f"district-{d % 12:02d}/sensor-{d:05d}"
            common = {"device_id": device, "ts": at, "quality": 0, "source": "mqtt", "site": "edge-bench",
                      "ingest_ts": ingest}  # fmt: skip
            rows.append(common | {"metric": "temperature", "value": round(temp[d], 1), "unit": "Cel"})
            rows.append(common | {"metric": "humidity", "value": round(humidity[d], 1), "unit": "%RH"})
            rows.append(common | {"metric": "energy", "value": round(energy[d], 3), "unit": "kWh"})
            if d % 50 == step % 50:
                rows.append(
                    common | {"metric": "status", "text": rng.choice(["ok", "door open", "low battery"])}
                )
        flushes.append(rows)
    return flushes


def make_lake(root: Path, devices: int, minutes: int) -> tuple[list[Path], list[Path]]:
    """Part files of the real readings job, then the real compaction's file."""
    from citylake.pipelines import runner  # PyFlink: only when a lake is made here

    layout = DataLayout(root)
    spec = table("readings")
    writer = LandingWriter(layout)
    for rows in city_rows(devices, minutes, 1):
        batcher = ColumnBatcher(spec)
        for row in rows:
            batcher.append(row)
        batch, bad = batcher.take()
        assert not bad, bad
        writer.commit([(spec, batch)])
    config = CityConfig(
        site="edge-bench",
        data_dir=root,
        sources=[SourceConfig(name="mqtt", type="mqtt", url="mqtt://127.0.0.1:1883")],
        pipelines=PipelinesConfig(flink=FlinkConfig(checkpoint_interval_s=1)),
    )
    runner.start(config, "readings", "batch").wait()
    parts = [Path(p) for p in sorted(TableLog(layout, spec).snapshot().paths)]
    # What compaction writes (its own function), beside the lake, not committed.
    compacted = root / "compacted-bench.parquet"
    write_sorted(spec, [str(p) for p in parts], str(compacted))
    return parts, [compacted]


@dataclass
class Measured:
    raw: int = 0
    packed: int = 0
    encode_s: float = 0.0
    decode_s: float = 0.0

    def per_mb(self) -> tuple[float, float, float]:
        mb = self.raw / MB
        return self.packed / self.raw, self.encode_s / mb, self.decode_s / mb


def cpu(work: Callable[[], object], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        work()
        runs.append(time.process_time() - started)
    return quantile(runs, 0.0)  # the least disturbed run


def encode_all(codec: Codec, chunks: list[bytes]) -> list[bytes]:
    return [codec.encode(c) for c in chunks]


def decode_all(codec: Codec, packed: list[bytes], sizes: list[int]) -> list[bytes]:
    return [codec.decode(p, n) for p, n in zip(packed, sizes, strict=True)]


def measure(files: list[Path], chunk: int, repeat: int) -> dict[str, Measured]:
    found = {c.name: Measured() for c in CODECS}
    for path in files:
        data = path.read_bytes()
        chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        for codec in CODECS:
            packed = [codec.encode(c) for c in chunks]
            unpacked = [codec.decode(p, len(c)) for p, c in zip(packed, chunks, strict=True)]
            assert unpacked == chunks, f"{codec.name} did not give the bytes back"
            m = found[codec.name]
            m.raw += len(data)
            m.packed += sum(len(p) for p in packed)
            m.encode_s += cpu(partial(encode_all, codec, chunks), repeat)
            m.decode_s += cpu(partial(decode_all, codec, packed, [len(c) for c in chunks]), repeat)
    return found


def link_cost(m: Measured, rate: int) -> float:
    """Seconds to ship one MB of lake file over a link of ``rate`` bytes/s."""
    ratio, encode, decode = m.per_mb()
    return encode + ratio * MB / rate + decode


def report(kind: str, files: list[Path], found: dict[str, Measured]) -> dict[str, str]:
    total = sum(p.stat().st_size for p in files)
    print(f"\n{kind}: {len(files)} files, {total / MB:.2f} MB")
    print(f"{'codec':8} {'bytes out':>10} {'saved':>7} {'encode ms/MB':>13} {'decode ms/MB':>13}", end="")
    for link in LINKS:
        print(f" {link + ' s/MB':>26}", end="")
    print()
    picks = {}
    for name, m in found.items():
        ratio, encode, decode = m.per_mb()
        print(
            f"{name:8} {m.packed / MB:9.2f}M {1 - ratio:7.1%} {encode * 1e3:13.2f} {decode * 1e3:13.2f}",
            end="",
        )
        for rate in LINKS.values():
            print(f" {link_cost(m, rate):26.4f}", end="")
        print()
    for link, rate in LINKS.items():
        best = min(found, key=lambda n: link_cost(found[n], rate))
        picks[link] = best
        print(f"  best for {link}: {best}")
    return picks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", type=Path, help="an existing data_dir to measure (default: make one)")
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--minutes", type=int, default=60, help="of readings every 10 s per device")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-bytes", type=int, default=SyncConfig().chunk_bytes)
    args = parser.parse_args()
    if args.lake is not None:
        paths = TableLog(DataLayout(args.lake), table("readings")).snapshot().paths
        files = [Path(p) for p in paths]
        groups = {
            "part files": [p for p in files if p.name.startswith("part-")],
            "compacted files": [p for p in files if p.name.startswith("compacted-")],
            "synced files": [p for p in files if p.name.startswith("synced-")],
        }
    else:
        root = Path(tempfile.mkdtemp(prefix="citylake-sync-codec-"))
        started = time.monotonic()
        parts, compacted = make_lake(root, args.devices, args.minutes)
        print(f"lake made in {time.monotonic() - started:.0f} s under {root}")
        groups = {"Flink part files": parts, "compacted file": compacted}
    print(f"chunks of {args.chunk_bytes} bytes, best of {args.repeat} runs, one thread")
    for kind, files in groups.items():
        if files:
            report(kind, files, measure(files, args.chunk_bytes, args.repeat))


if __name__ == "__main__":
    main()
