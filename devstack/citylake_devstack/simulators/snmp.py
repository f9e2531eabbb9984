"""``citylake simulate snmp``: a UPS agent (Debian's snmpd with UPS-MIB
objects, v2c and v3) to poll, and, when given a receiver, the traps a UPS
and a switch send (upsTrapOnBattery, linkDown, linkUp, coldStart) with
net-snmp's own snmptrap, round-robin at an interval."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from citylake.ingest.snmp.config import parse_udp_url
from citylake_devstack.snmpd import AUTH_KEY, COMMUNITY, PRIV_KEY, USER, Snmpd, snmptrap, start_snmpd

TRAP_SEQUENCE: tuple[tuple[str, str, list[tuple[str, str, str]]], ...] = (
    ("upsTrapOnBattery", "1.3.6.1.2.1.33.2.1", [("1.3.6.1.2.1.33.1.2.3.0", "i", "25")]),
    ("linkDown", "1.3.6.1.6.3.1.1.5.3", [("1.3.6.1.2.1.2.2.1.1.2", "i", "2")]),
    ("linkUp", "1.3.6.1.6.3.1.1.5.4", [("1.3.6.1.2.1.2.2.1.1.2", "i", "2")]),
    ("coldStart", "1.3.6.1.6.3.1.1.5.1", []),
)


@dataclass
class SnmpSimulation:
    agent: Snmpd
    traps_sent: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"agent {self.agent.url}: v2c community {COMMUNITY}; v3 user {USER} "
            f"(SHA256 {AUTH_KEY}, AES {PRIV_KEY}), engine id {self.agent.engine_id}"
        )


def run_snmp_simulator(
    workdir: Path,
    duration_s: float,
    trap_url: str | None = None,
    trap_every_s: float = 1.0,
    trap_community: str = COMMUNITY,
    on_start: Callable[[SnmpSimulation], None] | None = None,
) -> SnmpSimulation:
    agent = start_snmpd(workdir)
    simulation = SnmpSimulation(agent)
    if on_start is not None:
        on_start(simulation)
    try:
        deadline = time.monotonic() + duration_s
        index = 0
        while time.monotonic() < deadline:
            if trap_url is not None:
                _, port = parse_udp_url(trap_url)
                name, trap_oid, varbinds = TRAP_SEQUENCE[index % len(TRAP_SEQUENCE)]
                snmptrap(port, trap_oid, varbinds, community=trap_community)
                simulation.traps_sent[name] = simulation.traps_sent.get(name, 0) + 1
                index += 1
            time.sleep(min(trap_every_s, max(0.0, deadline - time.monotonic())))
    finally:
        agent.process.stop()
    return simulation
