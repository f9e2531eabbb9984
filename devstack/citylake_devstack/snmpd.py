"""Debian's net-snmp agent (``snmpd``) on a free UDP port, with its own
config: a v2c read community, a v3 authPriv user, and UPS-MIB (RFC 1628)
objects set with ``override`` so a test knows every value the agent serves.
And ``snmptrap`` (Debian ``snmp``) to send real traps."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_udp_port

COMMUNITY = "citylake-ro"
USER, AUTH_KEY, PRIV_KEY = "citylake", "auth-pass-8765", "priv-pass-8765"
# What the agent serves beyond its own MIB-2: (oid, net-snmp type, value).
UPS_OBJECTS: tuple[tuple[str, str, str], ...] = (
    ("1.3.6.1.2.1.33.1.2.4.0", "integer", "87"),  # upsEstimatedChargeRemaining, percent
    ("1.3.6.1.2.1.33.1.2.3.0", "integer", "42"),  # upsEstimatedMinutesRemaining
    ("1.3.6.1.2.1.33.1.4.4.1.2.1", "integer", "231"),  # upsOutputVoltage.1, RMS volts
    ("1.3.6.1.2.1.33.1.4.4.1.2.2", "integer", "229"),  # upsOutputVoltage.2
    ("1.3.6.1.2.1.33.1.4.4.1.2.3", "integer", "230"),  # upsOutputVoltage.3
    ("1.3.6.1.4.1.99999.1.0", "octet_str", "230.5"),  # a firmware that reports numbers as text
    ("1.3.6.1.4.1.99999.2.0", "counter", "123456"),
)


def _binary(name: str, package: str) -> str:
    for folder in ("/usr/sbin", "/usr/bin"):
        if Path(folder, name).exists():
            return str(Path(folder, name))
    found = shutil.which(name)
    if found is None:
        raise ComponentUnavailable(f"{name} not found; install Debian's {package} (tools/setup/apt.sh)")
    return found


@dataclass
class Snmpd:
    process: ManagedProcess
    port: int
    engine_id: str  # hex, as snmptrap -e and USM localisation need it

    @property
    def url(self) -> str:
        return f"udp://127.0.0.1:{self.port}"


def start_snmpd(
    workdir: Path, objects: Sequence[tuple[str, str, str]] = UPS_OBJECTS, sys_name: str = "ups-lab-1"
) -> Snmpd:
    exe = _binary("snmpd", "snmpd")
    port = free_udp_port()
    workdir.mkdir(parents=True, exist_ok=True)
    engine_id = "8000000005" + os.urandom(6).hex()  # RFC 3411: enterprise 0, format 5 (octets)
    lines = [
        f"agentAddress udp:127.0.0.1:{port}",
        f"exactEngineID 0x{engine_id}",
        f"rocommunity {COMMUNITY} 127.0.0.1",
        f'createUser {USER} SHA-256 "{AUTH_KEY}" AES "{PRIV_KEY}"',
        f"rouser {USER} priv",
        f"sysName {sys_name}",
        "sysLocation Gulou cabinet 7",
        *(f"override .{oid} {kind} {value}" for oid, kind, value in objects),
    ]
    conf = workdir / "snmpd.conf"
    conf.write_text("\n".join(lines) + "\n")
    env = {"SNMP_PERSISTENT_DIR": str(workdir / "persist"), "MIBS": "", "MIBDIRS": str(workdir)}
    process = ManagedProcess(
        "snmpd",
        [exe, "-C", "-c", str(conf), "-f", "-Lf", str(workdir / "snmpd.log"), "-p", str(workdir / "pid")],
        workdir / "snmpd.out",
        env=env,
    ).start()
    snmpget = _binary("snmpget", "snmp")
    deadline = time.monotonic() + 15
    while True:
        argv = [snmpget, "-v2c", "-c", COMMUNITY, "-r0", "-t0.3", "-On", f"127.0.0.1:{port}"]
        probe = subprocess.run(
            [*argv, "1.3.6.1.2.1.1.5.0"],
            capture_output=True, text=True, env={**os.environ, "MIBS": ""}, check=False,
        )  # fmt: skip
        if probe.returncode == 0:
            break
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            raise ComponentUnavailable(f"snmpd did not answer on udp {port}: {process.log_tail()}")
        time.sleep(0.1)
    return Snmpd(process, port, engine_id)


def snmptrap(
    port: int,
    trap_oid: str,
    varbinds: Sequence[tuple[str, str, str]] = (),
    community: str | None = None,
    v3: Mapping[str, str] | None = None,
    uptime: str = "",
) -> None:
    """Send one trap with net-snmp's ``snmptrap``: v2c with ``community``, or v3
    with ``v3`` = {user, auth_key, priv_key, engine_id} (SHA-256/AES, authPriv)."""
    exe = _binary("snmptrap", "snmp")
    if v3 is not None:
        auth = ["-v3", "-e", "0x" + v3["engine_id"], "-u", v3["user"], "-l", "authPriv",
                "-a", "SHA-256", "-A", v3["auth_key"], "-x", "AES", "-X", v3["priv_key"]]  # fmt: skip
    else:
        auth = ["-v2c", "-c", community or COMMUNITY]
    argv = [exe, *auth, f"127.0.0.1:{port}", uptime, trap_oid]
    for oid, kind, value in varbinds:
        argv += [oid, kind, value]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "MIBS": ""}, check=False)
    if done.returncode != 0:
        raise ComponentUnavailable(f"snmptrap failed ({done.returncode}): {done.stderr.strip()}")
