"""The middle layer: SIP transactions between the transport and the platform.

Coming in, it checks what every request must carry (Via, From, To, Call-ID,
CSeq), answers a UDP retransmission with the response already sent (the
server-transaction cache, ``ServerTransactions``), hands a device's response
to the client transaction it belongs to, and gives everything else to its
user, the platform. Going out, it answers requests and sends the platform's
own requests as client transactions (``ClientTransactions``: fresh Call-ID,
From tag and branch, the platform's CSeq, Timer E and F on one loop timer),
one at a time per device: the next leaves when the device gave a final
answer to the previous one (or Timer F gave it up). Cameras handle one
transaction at a time; a query that arrives while they still answer the
previous one may be dropped.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Protocol

from citylake.ingest.gb28181 import sip
from citylake.ingest.gb28181.config import GB28181SourceConfig
from citylake.ingest.gb28181.peer import Peer
from citylake.ingest.gb28181.transactions import (
    PENDING,
    ClientTransaction,
    ClientTransactions,
    PendingFull,
    ServerTransactions,
)
from citylake.ingest.gb28181.transport import SipTransport

log = logging.getLogger(__name__)

# Requests queued for one device behind the one in flight (Catalog, DeviceInfo,
# Alarm responses); a device that never answers cannot grow its queue past it.
MAX_QUEUED_PER_DEVICE = 32
# Methods counted by name in stats; any other is counted as received_other
# (the method is the sender's choice: as a key it would grow without bound).
KNOWN_METHODS = frozenset(
    {"REGISTER", "MESSAGE", "OPTIONS", "ACK", "INVITE", "BYE", "CANCEL", "INFO", "NOTIFY", "SUBSCRIBE"}
)
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")


class TransactionUser(Protocol):
    """What the layer above (the platform) answers to."""

    def request(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        """A new request (not a retransmission) with every required header."""

    def bad(
        self, raw: bytes, reason: str, partial: sip.SipMessage | None, peer: Peer, status: int = 400
    ) -> None:
        """Reject ``raw`` and, when its request line parsed, answer ``status``."""

    def peer_of(self, device_id: str) -> Peer | None:
        """Where ``device_id`` is registered now (None: it is not)."""


class TransactionLayer:
    def __init__(
        self,
        config: GB28181SourceConfig,
        stats: Counter[str],
        transport: SipTransport,
        name: str,
    ) -> None:
        self.config = config
        self.stats = stats
        self.transport = transport
        self.name = name
        transport.user = self
        self.user: TransactionUser | None = None
        self.client = ClientTransactions()
        self.server = ServerTransactions(config.answered_cache_max, config.answered_cache_bytes)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # monotonic time the timer is set for
        # Per device: bodies waiting behind the request in flight, and the
        # branch of that request.
        self._outbox: dict[str, deque[bytes]] = {}
        self._in_flight: dict[str, str] = {}

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def sweep(self) -> None:
        """Forget responses whose Timer J ran out."""
        self._counting_evictions(lambda: self.server.forget(time.monotonic()))

    # --- coming in (TransportUser) ----------------------------------------

    def unreadable(self, raw: bytes, reason: str, partial: sip.SipMessage | None, peer: Peer) -> None:
        if self.user is not None:
            self.user.bad(raw, reason, partial, peer)

    def received(self, raw: bytes, message: sip.SipMessage, peer: Peer) -> None:
        user = self.user
        if user is None:
            return
        try:
            if not message.is_request:
                self._on_response(message)
                return
            method = message.method if message.method in KNOWN_METHODS else "other"
            self.stats[f"received_{method}"] += 1
            missing = [h for h in _REQUIRED if message.get(h) is None]
            if missing:
                user.bad(raw, f"malformed SIP: missing {', '.join(missing)}", message, peer)
                return
            try:
                message.cseq()
            except ValueError as exc:
                user.bad(raw, f"malformed SIP: {exc}", message, peer)
                return
            answered = self.server.answer_of(message)
            if answered is not None and message.method != "ACK":
                if answered == PENDING:
                    self.stats["retransmissions_pending"] += 1  # its answer waits for landing
                    return
                self.stats["retransmissions"] += 1
                self.transport.send(answered, peer)
                return
            user.request(raw, message, peer)
        except Exception as exc:  # one bad message must never stop the server
            log.exception("GB28181 %s: failed on a message from %s:%d", self.name, *peer.addr)
            user.bad(raw, f"internal error: {type(exc).__name__}: {exc}", message, peer, 500)

    # --- server transactions ----------------------------------------------

    def reply(
        self,
        request: sip.SipMessage,
        status: int,
        peer: Peer,
        headers: Sequence[tuple[str, str]] = (),
        reason: str | None = None,
    ) -> None:
        if request.method == "ACK":
            return
        response = sip.build_response(
            request,
            status,
            reason,
            [*headers, ("User-Agent", "citylake")],
            to_tag=secrets.token_hex(4),
        )
        data = response.to_bytes()
        self.transport.send(data, peer)
        self.stats[f"sent_{status}"] += 1
        self._remember(request, peer, data)

    def hold(self, request: sip.SipMessage, peer: Peer) -> None:
        """``request`` is answered later (once its rows land): until then a
        retransmission of it is dropped, not processed a second time."""
        self._remember(request, peer, PENDING)

    def _remember(self, request: sip.SipMessage, peer: Peer, data: bytes) -> None:
        key = ServerTransactions.keyed(request)
        if peer.reliable or key is None:
            return
        self._counting_evictions(lambda: self.server.remember(key, data, time.monotonic()))

    def _counting_evictions(self, change: Callable[[], None]) -> None:
        before = self.server.evicted
        change()
        if self.server.evicted > before:
            self.stats["answered_evicted"] += self.server.evicted - before

    # --- client transactions ----------------------------------------------

    def queue(self, device_id: str, body: bytes) -> None:
        """Send ``body`` (MANSCDP) to ``device_id`` in a MESSAGE once its
        requests before it are answered."""
        queue = self._outbox.setdefault(device_id, deque())
        if len(queue) >= MAX_QUEUED_PER_DEVICE:
            queue.popleft()
            self.stats["queries_dropped"] += 1
            log.info(
                "GB28181 %s: %s has %d requests queued; dropped the oldest", self.name, device_id, len(queue)
            )
        queue.append(body)
        self._pump(device_id)

    def forget_device(self, device_id: str) -> None:
        """A device that unregistered or expired gets no more of our requests."""
        self._outbox.pop(device_id, None)
        self._in_flight.pop(device_id, None)
        self.client.drop_device(device_id)

    def _pump(self, device_id: str) -> None:
        if device_id in self._in_flight:
            return
        queue = self._outbox.get(device_id)
        peer = self.user.peer_of(device_id) if self.user is not None else None
        if not queue or peer is None:
            self._outbox.pop(device_id, None)
            return
        transaction = self._send(device_id, peer, queue.popleft())
        if transaction is not None:
            self._in_flight[device_id] = transaction.key
            self._arm_timer()
        if not queue:
            self._outbox.pop(device_id, None)

    def _send(self, device_id: str, peer: Peer, body: bytes) -> ClientTransaction | None:
        """A MESSAGE to a registered device as a new client transaction (a new
        call: nothing in it is taken from the device's REGISTER)."""
        config = self.config
        host = self.transport.local_host(peer)
        ids = self.client.new_request(host)
        via = f"SIP/2.0/{peer.transport.upper()} {host}:{self.transport.port};rport;branch={ids.branch}"
        request = sip.build_request(
            "MESSAGE",
            f"sip:{device_id}@{peer.addr[0]}:{peer.addr[1]}",
            [
                ("Via", via),
                ("From", f"<sip:{config.platform_id}@{config.domain}>;tag={ids.from_tag}"),
                ("To", f"<sip:{device_id}@{config.domain}>"),
                ("Call-ID", ids.call_id),
                ("CSeq", f"{ids.cseq} MESSAGE"),
                ("Max-Forwards", "70"),
                ("Content-Type", "Application/MANSCDP+xml"),
                ("User-Agent", "citylake"),
            ],
            body,
        )
        data = request.to_bytes()
        try:
            transaction = self.client.start(
                ids, device_id, "MESSAGE", data, peer.transport, peer.addr, time.monotonic()
            )
        except PendingFull as exc:
            self.stats["queries_dropped"] += 1
            log.warning("GB28181 %s: request to %s not sent: %s", self.name, device_id, exc)
            return None
        self.stats["queries_sent"] += 1
        self.transport.send(data, peer)
        return transaction

    def _on_response(self, message: sip.SipMessage) -> None:
        """A device answering one of our requests: the next one may go."""
        self.stats["responses_received"] += 1
        done = self.client.on_response(message, time.monotonic())
        if done is None:
            if (message.status or 0) >= 200:
                # Late (after Timer F), a retransmitted final or not ours.
                self.stats["responses_unmatched"] += 1
            return
        self.stats["queries_answered"] += 1
        if done.status is not None and done.status >= 300:
            self.stats["queries_refused"] += 1
            log.info(
                "GB28181 %s: %s answered a %s with %d", self.name, done.device_id, done.method, done.status
            )
        self._finished(done)
        self._arm_timer()

    def _finished(self, transaction: ClientTransaction) -> None:
        if self._in_flight.get(transaction.device_id) == transaction.key:
            del self._in_flight[transaction.device_id]
            self._pump(transaction.device_id)

    def _on_timer(self) -> None:
        self._timer = None
        resend, timed_out = self.client.due(time.monotonic())
        for transaction in resend:
            self.stats["queries_retransmitted"] += 1
            self.transport.send(transaction.data, Peer(transaction.transport, transaction.addr))
        for transaction in timed_out:
            self.stats["queries_timed_out"] += 1
            log.info(
                "GB28181 %s: %s did not answer a %s within %.0f s (Timer F); next request",
                self.name,
                transaction.device_id,
                transaction.method,
                self.client.timeout_s,
            )
            self._finished(transaction)
        self._arm_timer()

    def _arm_timer(self) -> None:
        """One loop timer for all client transactions, at the next deadline."""
        deadline = self.client.next_deadline()
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer_at = deadline
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)
