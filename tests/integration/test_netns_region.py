"""Many edges behind one region namespace (`NetnsPair(region_of=...)`): each
edge reaches the region's one listener on its own link, a cut of one link
leaves the others up, and closing an edge's pair leaves the region's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from citylake_devstack.netns import NetnsPair
from citylake_devstack.process import ManagedProcess

PORT = 8391

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0,
        reason="needs root for network namespaces, veth pairs, iptables and tc (CI runs as root)",
    ),
]


LISTEN = "import socket\ns = socket.create_server(('0.0.0.0', %d))\nwhile True:\n    s.accept()[0].close()\n"
CONNECT = "import socket, sys; socket.create_connection((sys.argv[1], %d), timeout=2).close()"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Any]:
    """Start one TCP listener on all addresses of a region's namespace."""
    started: list[ManagedProcess] = []

    def start(net: NetnsPair) -> None:
        process = ManagedProcess(
            "listener", net.exec_argv(net.region, [sys.executable, "-c", LISTEN % PORT]), tmp_path / "l.log"
        ).start()
        started.append(process)
        process.wait_until(lambda: net.listening(net.region, PORT), 30, "listener")

    yield start
    for process in started:
        process.stop()


def reaches(net: NetnsPair) -> bool:
    """Whether the edge connects to the region's listener at its own address there."""
    done = subprocess.run(
        net.exec_argv(net.edge, [sys.executable, "-c", CONNECT % PORT, net.region_ip]),
        capture_output=True,
        check=False,
        timeout=20,
    )
    return done.returncode == 0


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_edges_of_one_region_each_have_their_own_link_into_its_namespace(listener: Any) -> None:
    with NetnsPair() as first:
        listener(first)
        second, third = NetnsPair(region_of=first), NetnsPair(region_of=first)
        assert second.region == third.region == first.region
        assert len({first.region_ip, second.region_ip, third.region_ip}) == 3
        with second, third:
            assert all(reaches(net) for net in (first, second, third))
            second.cut()
            assert not reaches(second) and reaches(first) and reaches(third)
            second.restore()
            assert reaches(second)
        # The joined pairs took their edge namespaces and left the region's.
        assert first.region in namespaces() and second.edge not in namespaces()
        assert reaches(first)
    assert first.region not in namespaces()


def test_a_joined_pair_cannot_be_joined_again() -> None:
    first = NetnsPair()
    second = NetnsPair(region_of=first)
    with pytest.raises(ValueError, match="owns the region"):
        NetnsPair(region_of=second)
