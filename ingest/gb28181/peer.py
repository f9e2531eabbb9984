"""Who is on the other end: a device's transport and address, and what the
platform remembers of the addresses that tried to REGISTER (their digest
nonces and wrong passwords).

A ``Peer`` is what every layer passes instead of a ``(transport, addr)``
pair: the transport answers on it, the transaction layer keys its requests to
it, and a registration binds a device id to one (a MESSAGE naming a
registered device from another peer is refused).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from citylake.ingest.gb28181.digest import DigestAuthenticator, Verdict

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of the signalling: ``udp`` or ``tcp`` and the address; over TCP
    the address names the connection the answers go back on."""

    transport: str
    addr: Addr

    @property
    def host(self) -> str:
        return self.addr[0]

    @property
    def reliable(self) -> bool:
        """TCP: no retransmissions, so nothing to answer twice or resend."""
        return self.transport != "udp"

    def __str__(self) -> str:
        return f"{self.transport}://{self.addr[0]}:{self.addr[1]}"


class PeerAuth:
    """REGISTER authentication: digest challenges and checks
    (``DigestAuthenticator``: its nonces, their TTL and replays), and per source
    address the wrong passwords within a window, after which an address gets
    403 without a challenge (a password guesser learns nothing more)."""

    def __init__(
        self,
        realm: str,
        nonce_ttl_s: float,
        max_nonces: int,
        failures_max: int,
        failure_window_s: float,
    ) -> None:
        self.digest = DigestAuthenticator(realm, nonce_ttl_s, max_nonces=max_nonces)
        self.failures_max = failures_max
        self.failure_window_s = failure_window_s
        self.max_hosts = max_nonces
        # Source address -> (wrong-password REGISTERs, window start), oldest first.
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @property
    def evicted(self) -> int:
        return self.digest.evicted

    @property
    def replays(self) -> int:
        return self.digest.replays

    def challenge(self, stale: bool = False) -> str:
        return self.digest.challenge(stale)

    def verify(self, authorization: str, password: str, username: str) -> tuple[Verdict, str]:
        return self.digest.verify(authorization, "REGISTER", password, username=username)

    def limited(self, peer: Peer) -> bool:
        """Whether ``peer``'s host used up its wrong-password REGISTERs for now."""
        entry = self._failures.get(peer.host)
        if entry is None:
            return False
        failures, since = entry
        if time.monotonic() - since > self.failure_window_s:
            del self._failures[peer.host]
            return False
        return failures >= self.failures_max

    def failed(self, peer: Peer) -> None:
        now = time.monotonic()
        failures, since = self._failures.pop(peer.host, (0, now))
        if now - since > self.failure_window_s:
            failures, since = 0, now
        self._failures[peer.host] = (failures + 1, since)
        # One entry per source address, bounded like the nonces: the oldest go.
        while len(self._failures) > self.max_hosts:
            self._failures.popitem(last=False)
