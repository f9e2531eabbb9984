"""GB28181 registration storm: N SIPp devices register (digest auth), answer the
platform's Catalog/DeviceInfo queries (each a new call of the platform's,
answered by SIPp's out-of-call scenario) and send keepalives, against one
`citylake ingest` process (real CLI, real landing zone).

Figures: time until every device's `online` event has landed, REGISTER latency
(SIPp's own response-time timer 1: REGISTER to 200 OK, challenge included, so
two round trips) and keepalive MESSAGE latency (timer 2, one round trip), CPU
and RSS of the ingest process. Baseline in the same run: SIPp's built-in `uac`
against SIPp's built-in `uas` (a trivial responder) on the same machine, with
the same count and rate; the ratio compares p99s.

    .venv/bin/python bench/bench_gb28181.py [--devices 1000] [--rate 200] [--keepalive-ms 1000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import yaml

from citylake_devstack.process import CITYLAKE, ManagedProcess, free_port
from citylake_devstack.scalereport.summary import quantile  # the one percentile of every figure
from citylake_devstack.sipp import Sipp, read_rtt, read_stats, sim_devices

PLATFORM, DOMAIN, PASSWORD = "34020000002000000001", "3402000000", "bench-pw"


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB; the peak (VmHWM) is one psutil does not read."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class OnlineWatcher:
    """Counts distinct devices whose `online` event has landed, and those
    whose catalog landed (answered to the platform's query, out of call)."""

    def __init__(self, landing: Path) -> None:
        self.landing = landing
        self.seen_files: set[Path] = set()
        self.online: set[str] = set()
        self.catalogs: set[str] = set()

    def poll(self) -> int:
        for path in self.landing.rglob("*.parquet"):
            if path in self.seen_files or path.name.startswith("."):
                continue
            self.seen_files.add(path)
            rows = pq.read_table(path, columns=["device_id", "kind"]).to_pylist()
            self.online.update(str(r["device_id"]) for r in rows if r["kind"] == "online")
            self.catalogs.update(str(r["device_id"]) for r in rows if r["kind"] == "catalog")
        return len(self.online)


def storm(work: Path, devices: int, rate: float, keepalive_ms: int, transport: str) -> dict[str, float]:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    config = work / "city.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "bench",
                "data_dir": str(work / "data"),
                "sources": [
                    {
                        "name": "video",
                        "type": "gb28181",
                        "url": f"{transport}://127.0.0.1:{port}",
                        "transports": ["udp", "tcp"],
                        "platform_id": PLATFORM,
                        "domain": DOMAIN,
                        "password": PASSWORD,
                    }
                ],
            }
        )
    )
    env = {"CITYLAKE_LOG_LEVEL": "WARNING"}
    ingest = ManagedProcess(
        "citylake ingest",
        [*CITYLAKE, "ingest", "--config", str(config)],
        work / "ingest.log",
        env,
    ).start()
    try:
        ingest.wait_port(port, 60)
        time.sleep(0.5)
        cpu0 = cpu_s(ingest.pid)
        _, rss_before = rss_mb(ingest.pid)
        sipp = Sipp(
            work / "sipp",
            f"127.0.0.1:{port}",
            "keepalive",
            sim_devices(devices, DOMAIN),
            {"platform_id": PLATFORM, "domain": DOMAIN},
            PASSWORD,
            transport,
            rate=rate,
            pause_ms=keepalive_ms,
            trace_rtt=True,
            recv_timeout_ms=30_000,
        )
        watcher = OnlineWatcher(work / "data" / "landing" / "device_events")
        started = time.monotonic()
        sipp.start()
        all_online: float | None = None
        while True:
            count = watcher.poll()
            if count >= devices and all_online is None:
                all_online = time.monotonic() - started
            if not sipp.alive() and count >= devices:
                break
            if not sipp.alive() and time.monotonic() - started > 600:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        result = sipp.wait(30)
        cpu = cpu_s(ingest.pid) - cpu0
        rss_now, rss_peak = rss_mb(ingest.pid)
    finally:
        ingest.stop()
    register = read_rtt(result.rtt_path) if result.rtt_path else []
    keepalive = read_rtt(result.rtt_path, 2) if result.rtt_path else []
    return {
        "successful": result.successful,
        "failed": result.failed,
        "sipp_exit": result.exit_code,
        "online": len(watcher.online),
        "catalogs": len(watcher.catalogs),
        "all_online_s": all_online if all_online is not None else float("nan"),
        "elapsed_s": elapsed,
        "register_p50_ms": quantile(register, 0.5),
        "register_p99_ms": quantile(register, 0.99),
        "register_max_ms": max(register, default=float("nan")),
        "register_mean_ms": statistics.fmean(register) if register else float("nan"),
        "keepalive_p50_ms": quantile(keepalive, 0.5),
        "keepalive_p99_ms": quantile(keepalive, 0.99),
        "register_samples": len(register),
        "cpu_s": cpu,
        "rss_before_mb": rss_before,
        "rss_mb": rss_now,
        "rss_peak_mb": rss_peak,
    }


def echo_baseline(work: Path, calls: int, rate: float) -> dict[str, float]:
    """SIPp uac -> SIPp uas: the round trip of a trivial UDP SIP responder."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    uas = ManagedProcess(
        "sipp uas",
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
        work / "uas.log",
        cwd=work,
    ).start()
    try:
        time.sleep(0.5)
        uac = ManagedProcess(
            "sipp uac",
            [
                "sipp",
                f"127.0.0.1:{port}",
                "-sn",
                "uac",
                "-i",
                "127.0.0.1",
                "-p",
                str(free_port()),
                "-m",
                str(calls),
                "-r",
                f"{rate:g}",
                "-trace_rtt",
                "-rtt_freq",
                "1",
                "-nostdin",
                "-trace_stat",
                "-stf",
                str(work / "uac-stats.csv"),
            ],
            work / "uac.log",
            cwd=work,
        ).start()
        assert uac.proc is not None
        code = uac.proc.wait(600)
    finally:
        uas.stop()
    rtt = read_rtt(work / f"uac_{uac.pid}_rtt.csv")
    stats = read_stats(work / "uac-stats.csv")
    return {
        "exit": code,
        "successful": float(stats.get("SuccessfulCall(C)", "nan")),
        "p50_ms": quantile(rtt, 0.5),
        "p99_ms": quantile(rtt, 0.99),
        "samples": len(rtt),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="devices started per second")
    parser.add_argument("--keepalive-ms", type=int, default=1000, help="pause between a device's keepalives")
    parser.add_argument("--transport", choices=["udp", "tcp"], default="udp")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gb28181-") as tmp:
        work = Path(tmp)
        s = storm(work / "storm", args.devices, args.rate, args.keepalive_ms, args.transport)
        e = echo_baseline(work / "echo", args.devices, args.rate)
    print(
        f"GB28181 storm: {args.devices} devices over {args.transport}, {args.rate:g}/s, "
        f"4 keepalives {args.keepalive_ms} ms apart each"
    )
    print(
        f"  SIPp: {s['successful']:.0f} successful, {s['failed']:.0f} failed (exit {s['sipp_exit']:.0f}); "
        f"online events landed for {s['online']:.0f} devices, catalogs for {s['catalogs']:.0f}"
    )
    print(f"  time to all online (landed): {s['all_online_s']:.2f} s; whole run {s['elapsed_s']:.2f} s")
    print(
        f"  REGISTER (with 401 challenge) p50 {s['register_p50_ms']:.0f} ms, "
        f"p99 {s['register_p99_ms']:.0f} ms, max {s['register_max_ms']:.0f} ms, "
        f"mean {s['register_mean_ms']:.2f} ms ({s['register_samples']:.0f} samples)"
    )
    print(f"  keepalive MESSAGE p50 {s['keepalive_p50_ms']:.0f} ms, p99 {s['keepalive_p99_ms']:.0f} ms")
    print(
        f"  ingest process: CPU {s['cpu_s']:.2f} s "
        f"({1000 * s['cpu_s'] / max(1, args.devices):.2f} ms/device), "
        f"RSS {s['rss_before_mb']:.0f} -> {s['rss_mb']:.0f} MiB (peak {s['rss_peak_mb']:.0f} MiB)"
    )
    print(
        f"baseline SIPp uac -> SIPp uas (UDP echo), {e['samples']:.0f} calls: "
        f"p50 {e['p50_ms']:.0f} ms, p99 {e['p99_ms']:.0f} ms (exit {e['exit']:.0f})"
    )
    floor = max(e["p99_ms"], 1.0)  # SIPp measures in whole ms
    print(
        f"ratio p99: REGISTER / echo = {s['register_p99_ms'] / floor:.1f}x, "
        f"keepalive / echo = {s['keepalive_p99_ms'] / floor:.1f}x "
        "(echo p99 floored at SIPp's 1 ms resolution)"
    )


if __name__ == "__main__":
    main()
