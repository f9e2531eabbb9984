"""Two network namespaces joined by a veth pair, with real network faults.

What this kernel offers instead of ``netem`` (DESIGN.md, "Fault injection"):
random loss with ``iptables -m statistic``, a bandwidth limit with the ``tbf``
qdisc, and a cut with ``ip link set … down``. Needs root. Traffic stays
between the two namespaces; ``close()`` deletes both (their veth ends and
iptables rules go with them), and a new ``NetnsPair`` first deletes pairs
left by a process that died without closing its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Sequence
from types import TracebackType

from citylake_devstack.process import ComponentUnavailable

PREFIX = "citylake-"
_OURS = re.compile(rf"^{PREFIX}[er]-(\d+)-[0-9a-f]+$")


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    except FileNotFoundError:
        raise ComponentUnavailable(f"{argv[0]} not found; install iproute2 and iptables") from None
    if done.returncode != 0:
        raise ComponentUnavailable(f"`{' '.join(argv)}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphans() -> list[str]:
    """Delete namespaces of ours whose creating process is gone."""
    deleted = []
    for line in _run("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        match = _OURS.match(name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(ComponentUnavailable):
                _run("ip", "netns", "del", name)
                deleted.append(name)
    return deleted


class NetnsPair:
    """``edge`` and ``region`` namespaces, addresses ``edge_ip`` and ``region_ip``
    on a /30; faults apply on the edge's end of the link.

    ``NetnsPair(region_of=first)`` is another edge of ``first``'s region: its
    own edge namespace and veth pair, the other end in ``first.region`` (which
    ``first`` owns: create and close it after this one), on the next free /30
    of ``first``'s /24, so a region can have many edges, each its own link
    and faults."""

    def __init__(self, region_of: NetnsPair | None = None) -> None:
        for tool in ("ip", "iptables", "tc"):
            if shutil.which(tool) is None:
                raise ComponentUnavailable(f"{tool} not found; install iproute2 and iptables")
        sweep_orphans()
        tag = f"{os.getpid()}-{random.getrandbits(24):06x}"
        short = f"{random.getrandbits(32):08x}"  # interface names: 15 characters at most
        self.edge_if, self.region_if = f"cle{short}", f"clr{short}"
        self.edge = f"{PREFIX}e-{tag}"
        self._owns_region, self._joined = region_of is None, 0
        if region_of is None:
            self.region = f"{PREFIX}r-{tag}"
            self._net = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
            self._offset = random.randrange(0, 256, 4)
        else:
            if not region_of._owns_region:
                raise ValueError("NetnsPair: join the pair that owns the region namespace")
            region_of._joined += 1
            if region_of._joined >= 64:
                raise ValueError("NetnsPair: at most 63 more edges in one region (the /24's /30s)")
            self.region, self._net = region_of.region, region_of._net
            self._offset = (region_of._offset + 4 * region_of._joined) % 256
        self.edge_ip, self.region_ip = f"{self._net}.{self._offset + 1}", f"{self._net}.{self._offset + 2}"
        self._created = False

    def create(self) -> NetnsPair:
        self._created = True
        try:
            _run("ip", "netns", "add", self.edge)
            if self._owns_region:
                _run("ip", "netns", "add", self.region)
            _run("ip", "link", "add", self.edge_if, "type", "veth", "peer", "name", self.region_if)
            for ns, interface, address in (
                (self.edge, self.edge_if, self.edge_ip),
                (self.region, self.region_if, self.region_ip),
            ):
                _run("ip", "link", "set", interface, "netns", ns)
                _run("ip", "-n", ns, "addr", "add", f"{address}/30", "dev", interface)
                _run("ip", "-n", ns, "link", "set", interface, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def loss(self, probability: float) -> None:
        """Drop this share of the packets leaving each end, at random."""
        for ns, interface in ((self.edge, self.edge_if), (self.region, self.region_if)):
            _run(
                "ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-o", interface,
                "-m", "statistic", "--mode", "random", "--probability", f"{probability}", "-j", "DROP",
            )  # fmt: skip

    def limit(self, rate: str, burst: str = "32kbit", latency: str = "400ms") -> None:
        """A token bucket filter on the edge's uplink (``rate`` as tc writes it, e.g. 2mbit)."""
        _run(
            "ip", "netns", "exec", self.edge, "tc", "qdisc", "add", "dev", self.edge_if,
            "root", "tbf", "rate", rate, "burst", burst, "latency", latency,
        )  # fmt: skip

    def cut(self) -> None:
        _run("ip", "-n", self.edge, "link", "set", self.edge_if, "down")

    def restore(self) -> None:
        _run("ip", "-n", self.edge, "link", "set", self.edge_if, "up")

    def edge_bytes(self) -> tuple[int, int]:
        """(sent, received) by the edge's end of the link, IP headers and
        retransmissions included."""
        stats = json.loads(_run("ip", "-n", self.edge, "-j", "-s", "link", "show", "dev", self.edge_if))
        counters = stats[0]["stats64"]
        return int(counters["tx"]["bytes"]), int(counters["rx"]["bytes"])

    def dropped_bytes(self, ns: str) -> int:
        """Bytes the loss rule dropped as they left ``ns`` (not in the link's counters)."""
        table = _run("ip", "netns", "exec", ns, "iptables", "-n", "-v", "-x", "-L", "OUTPUT")
        return sum(
            int(f[1]) for f in (line.split() for line in table.splitlines()) if len(f) > 2 and f[2] == "DROP"
        )

    def listening(self, ns: str, port: int) -> bool:
        """Whether something in ``ns`` listens on TCP ``port``."""
        table = _run("ip", "netns", "exec", ns, "cat", "/proc/net/tcp")
        wanted = f":{port:04X}"
        return any(
            fields[1].endswith(wanted) and fields[3] == "0A"
            for fields in (line.split() for line in table.splitlines()[1:])
            if len(fields) > 3
        )

    def close(self) -> None:
        if not self._created:
            return
        # Deleting a namespace deletes its veth end (and so the pair) and its
        # iptables rules and qdiscs.
        for ns in (self.edge, self.region) if self._owns_region else (self.edge,):
            with contextlib.suppress(ComponentUnavailable):
                _run("ip", "netns", "del", ns)
        self._created = False

    def __enter__(self) -> NetnsPair:
        return self.create()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
