"""SIPp (Debian ``sip-tester``) playing GB28181 devices against a platform.

Scenarios live in ``ingest/gb28181/scenarios/``; device ids are handed to
SIPp in an injection file (``-inf``, one line per call, one call per device);
the platform's id, domain and password as ``-key`` keywords. SIPp runs as a
child process on a free local port; its own exit code and statistics CSV say
how the calls went.

The platform's requests (queries, Alarm responses) arrive as new calls with
Call-IDs of the platform's choosing, as RFC 3261 wants of requests outside a
dialog, so SIPp cannot file them with a device's REGISTER call: each device
scenario has an out-of-call scenario in ``scenarios/answers/`` (``-oocsf``)
that answers them.
"""

from __future__ import annotations

import csv
import logging
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port

log = logging.getLogger(__name__)
SCENARIOS = Path(__file__).resolve().parents[2] / "ingest" / "gb28181" / "scenarios"
# SIPp's documented exit codes.
EXIT_CODES = {
    0: "all calls successful",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}
SCENARIO_ENCODINGS = {"device": "UTF-8", "device_gb2312": "GB2312"}
ANSWERS = SCENARIOS / "answers"
# Scenarios whose devices answer like another's (answers/<name>.xml).
SHARED_ANSWERS = {"keepalive_loop": "keepalive"}


@dataclass(frozen=True)
class SimDevice:
    """One simulated NVR and its three channels (cameras)."""

    device_id: str
    channels: tuple[str, str, str]

    def fields(self) -> list[str]:
        return [self.device_id, *self.channels]


def sim_devices(count: int, domain: str, first_serial: int = 1) -> list[SimDevice]:
    """``count`` NVRs (type 118) with cameras (type 131), ids in ``domain``
    (civil code + industry), network 7. An NVR's serial is ``0nnnnn``, its
    channel k's ``knnnnn``: the out-of-call scenario derives the channels
    from the NVR's id by text alone (SIPp gives automatic calls no injection
    file and prints numbers as ``%lf``)."""
    if not (len(domain) == 10 and domain.isdigit()):
        raise ValueError(f"domain {domain!r} is not 10 digits")
    if first_serial < 0 or first_serial + count - 1 > 99_999:
        raise ValueError(f"{count} devices from serial {first_serial} do not fit 5 serial digits")
    devices = []
    for i in range(count):
        serial = f"{first_serial + i:05d}"
        devices.append(
            SimDevice(
                f"{domain}11870{serial}",
                (f"{domain}13171{serial}", f"{domain}13172{serial}", f"{domain}13173{serial}"),
            )
        )
    return devices


def write_injection(path: Path, devices: list[SimDevice], password: str) -> Path:
    """SEQUENTIAL lines: device id; three channel ids; the [authentication]
    keyword with the device id as username (SIPp expands a keyword given as
    an injection field, but not one nested inside [authentication ...])."""
    if any(c in password for c in ";] \n"):
        raise ValueError("the simulated devices' password may not contain ';', ']', spaces or newlines")
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["SEQUENTIAL"] + [
        ";".join([*d.fields(), f"[authentication username={d.device_id} password={password}]"])
        for d in devices
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".xml" and path.exists():
        return path
    found = SCENARIOS / f"{name}.xml"
    if not found.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.xml")))
        raise ValueError(f"no SIPp scenario {name!r} (known: {known})")
    return found


def answers_path(scenario: Path) -> Path | None:
    """The out-of-call scenario answering the platform's requests to the
    devices of ``scenario`` (None: they expect none, e.g. wrong_password)."""
    found = ANSWERS / f"{SHARED_ANSWERS.get(scenario.stem, scenario.stem)}.xml"
    if found.exists():
        return found
    beside = scenario.parent / "answers" / scenario.name
    return beside if beside.exists() else None


@dataclass
class SippResult:
    exit_code: int
    successful: int
    failed: int
    stats: dict[str, str] = field(default_factory=dict)
    log_tail: str = ""
    stats_path: Path | None = None
    rtt_path: Path | None = None

    @property
    def meaning(self) -> str:
        return EXIT_CODES.get(self.exit_code, "unknown")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failed == 0


class Sipp:
    """One SIPp run: ``start()``, then ``wait()`` for its result."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        scenario: str,
        devices: list[SimDevice],
        keys: dict[str, str],
        password: str,
        transport: str = "udp",
        rate: float = 10.0,
        rate_period_ms: int = 1000,
        max_concurrent: int | None = None,
        pause_ms: int | None = None,
        recv_timeout_ms: int = 15_000,
        trace_rtt: bool = False,
        extra: list[str] | None = None,
        binary: str = "sipp",
    ) -> None:
        if transport not in ("udp", "tcp"):
            raise ValueError(f"transport must be udp or tcp, got {transport!r}")
        if shutil.which(binary) is None:
            raise ComponentUnavailable(f"{binary} not found; install Debian sip-tester (`make setup`)")
        self.workdir = workdir
        self.scenario = scenario_path(scenario)
        self.devices = devices
        self.transport = transport
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        stem = f"sipp-{self.scenario.stem}-{transport}-{self.port}"
        self.stats_path = workdir / f"{stem}-stats.csv"
        self.trace_rtt = trace_rtt
        inf = write_injection(workdir / f"{stem}-devices.csv", devices, password)
        all_keys = {
            "enc": SCENARIO_ENCODINGS.get(self.scenario.stem, "UTF-8"),
            "expires": "3600",
            **keys,
        }
        argv = [
            binary,
            target,
            "-sf",
            str(self.scenario),
            "-inf",
            str(inf),
            "-m",
            str(len(devices)),
            "-r",
            f"{rate:g}",
            "-rp",
            f"{rate_period_ms}ms",
            "-i",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-t",
            "u1" if transport == "udp" else "tn",
            "-recv_timeout",
            f"{recv_timeout_ms}ms",
            "-trace_stat",
            "-stf",
            str(self.stats_path),
            "-fd",
            "1",
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(workdir / f"{stem}-errors.log"),
        ]
        self.answers = answers_path(self.scenario)
        if self.answers is not None:
            argv += ["-oocsf", str(self.answers)]
        if transport == "tcp":
            # SIPp refuses to start when its default socket budget exceeds the
            # open-files limit; one socket per device (-t tn) plus headroom.
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            argv += ["-max_socket", str(max(16, min(len(devices) + 64, soft - 64)))]
        if max_concurrent is not None:
            argv += ["-l", str(max_concurrent)]
        if pause_ms is not None:
            argv += ["-d", str(pause_ms)]
        if trace_rtt:
            # SIPp writes <scenario>_<pid>_rtt.csv into its working directory.
            argv += ["-trace_rtt", "-rtt_freq", "1"]
        for key, value in all_keys.items():
            argv += ["-key", key, value]
        argv += extra or []
        self.process = ManagedProcess(
            f"sipp {self.scenario.stem}", argv, workdir / f"{stem}.log", cwd=workdir
        )

    def start(self) -> Sipp:
        log.info("starting %s", " ".join(self.process.argv))
        self.process.start()
        return self

    def alive(self) -> bool:
        return self.process.alive()

    def wait(self, timeout_s: float = 120.0) -> SippResult:
        deadline = time.monotonic() + timeout_s
        proc = self.process.proc
        assert proc is not None, "not started"
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            self.process.stop(5)
            raise ComponentUnavailable(
                f"SIPp did not finish within {timeout_s:.0f}s; log {self.process.log_path}:\n"
                f"{self.process.log_tail()}"
            )
        return self.result(proc.returncode)

    def stop(self) -> SippResult:
        code = self.process.stop(5)
        return self.result(code if code is not None else -1)

    def result(self, code: int) -> SippResult:
        stats = read_stats(self.stats_path)
        return SippResult(
            exit_code=code,
            successful=int(stats.get("SuccessfulCall(C)", "0") or 0),
            failed=int(stats.get("FailedCall(C)", "0") or 0),
            stats=stats,
            log_tail=self.process.log_tail(),
            stats_path=self.stats_path,
            rtt_path=self.workdir / f"{self.scenario.stem}_{self.process.pid}_rtt.csv"
            if self.trace_rtt
            else None,
        )


def read_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's ``-trace_stat`` CSV (cumulative columns end in (C))."""
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def read_rtt(path: Path, rtd: int = 1) -> list[float]:
    """Response times in ms of timer ``rtd`` from ``-trace_rtt``
    (``Date_ms;response_time_ms;rtd_no``; SIPp's resolution is 1 ms)."""
    if not path.exists():
        return []
    values = []
    with path.open(newline="", errors="replace") as handle:
        for row in csv.reader(handle, delimiter=";"):
            if len(row) >= 3 and row[2].strip() == str(rtd):
                try:
                    values.append(float(row[1]))
                except ValueError:
                    continue
    return values
