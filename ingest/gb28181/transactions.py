"""The platform's transactions (RFC 3261 17, non-INVITE), pure: no I/O, the
clock is passed in (``now``, monotonic seconds), so the timers are unit-tested.

- ``ClientTransactions`` (17.1.2): the requests the platform originates
  outside any dialog, their retransmission over UDP and the matching of the
  device's responses to them.
- ``ServerTransactions`` (17.2.2): the responses the platform sent over UDP,
  kept for Timer J so a retransmitted request is answered again, not
  processed again.

Every request gets a fresh Call-ID, From tag and Via branch (8.1.1.4, 8.1.1.3,
8.1.1.7): a device that files requests by Call-ID must see a new call, not
something belonging to its REGISTER. A response is matched by the top Via
branch and the CSeq method (17.1.3); a device that drops the branch
(RFC 2543 style) is matched by Call-ID and CSeq instead.
"""

from __future__ import annotations

import heapq
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from citylake.ingest.gb28181 import sip

# RFC 3261 17.1.2.2 and table 4: Timer E starts at T1 and doubles up to T2;
# Timer F (64*T1) ends a transaction that never got a final response.
T1_S = 0.5
T2_S = 4.0
TIMER_F_S = 64 * T1_S
# A platform with 100k devices has at most one query in flight per device;
# past this many the oldest is given up rather than memory growing.
MAX_PENDING = 100_000
BRANCH_MAGIC = "z9hG4bK"


# RFC 3261 Timer J for non-INVITE over UDP: how long a response is kept to
# answer the request's retransmissions.
TIMER_J_S = 64 * T1_S
# Marks a request whose answer waits for its rows to land: a retransmission
# meanwhile is dropped rather than processed a second time.
PENDING = b""
ServerKey = tuple[str, str, str, str]


class PendingFull(RuntimeError):
    """More client transactions than ``max_pending``: the request was not sent."""


@dataclass
class ClientTransaction:
    """One request of the platform awaiting its final response."""

    key: str
    device_id: str
    call_id: str
    cseq: int
    method: str
    data: bytes
    transport: str
    addr: tuple[str, int]
    started: float
    next_send: float | None
    interval: float
    retransmissions: int = 0
    status: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True)
class NewRequest:
    """Identifiers of a request the platform is about to send."""

    call_id: str
    from_tag: str
    branch: str
    cseq: int


class ClientTransactions:
    """The platform's pending requests, bounded in count, with their timers."""

    def __init__(
        self,
        max_pending: int = MAX_PENDING,
        t1_s: float = T1_S,
        t2_s: float = T2_S,
        timeout_s: float = TIMER_F_S,
        token: Callable[[int], str] = secrets.token_hex,
    ) -> None:
        self.max_pending = max_pending
        self.t1_s = t1_s
        self.t2_s = t2_s
        self.timeout_s = timeout_s
        self._token = token
        # Keyed by branch; insertion order is start order (Timer F order).
        self._pending: OrderedDict[str, ClientTransaction] = OrderedDict()
        self._by_call: dict[tuple[str, int], str] = {}
        # Retransmission times (time, branch); stale entries are skipped when
        # popped, so rescheduling is O(log n) and ``due`` never scans all.
        self._timers: list[tuple[float, str]] = []
        self._cseq = 0

    def __len__(self) -> int:
        return len(self._pending)

    def new_request(self, host: str) -> NewRequest:
        """Fresh Call-ID, From tag, branch and the next number of the
        platform's own CSeq sequence (never one taken from the device)."""
        self._cseq = self._cseq % (2**31 - 1) + 1
        return NewRequest(
            call_id=f"{self._token(12)}@{host}",
            from_tag=self._token(6),
            branch=f"{BRANCH_MAGIC}{self._token(10)}",
            cseq=self._cseq,
        )

    def start(
        self,
        ids: NewRequest,
        device_id: str,
        method: str,
        data: bytes,
        transport: str,
        addr: tuple[str, int],
        now: float,
    ) -> ClientTransaction:
        """Track a request just sent. Raises ``PendingFull`` at the bound."""
        if len(self._pending) >= self.max_pending:
            raise PendingFull(f"{len(self._pending)} requests already await an answer")
        unreliable = transport == "udp"
        transaction = ClientTransaction(
            key=ids.branch,
            device_id=device_id,
            call_id=ids.call_id,
            cseq=ids.cseq,
            method=method,
            data=data,
            transport=transport,
            addr=addr,
            started=now,
            next_send=now + self.t1_s if unreliable else None,
            interval=self.t1_s,
        )
        self._pending[ids.branch] = transaction
        self._by_call[(ids.call_id, ids.cseq)] = ids.branch
        self._schedule(transaction)
        return transaction

    def _schedule(self, transaction: ClientTransaction) -> None:
        if transaction.next_send is not None:
            heapq.heappush(self._timers, (transaction.next_send, transaction.key))

    def match(self, response: sip.SipMessage) -> ClientTransaction | None:
        """The transaction ``response`` belongs to, or None (a stray or late one)."""
        try:
            cseq, method = response.cseq()
        except ValueError:
            return None
        branch = sip.header_params(response.get("Via") or "").get("branch", "")
        transaction = self._pending.get(branch) if branch.startswith(BRANCH_MAGIC) else None
        if transaction is None:
            # RFC 2543 devices may not echo the branch: Call-ID + CSeq then.
            key = self._by_call.get((response.call_id or "", cseq))
            transaction = self._pending.get(key) if key is not None else None
        if transaction is None or transaction.method != method or transaction.cseq != cseq:
            return None
        return transaction

    def on_response(self, response: sip.SipMessage, now: float) -> ClientTransaction | None:
        """Apply a response; returns the transaction when it is now complete
        (a final response), None for a provisional, stray or late one."""
        transaction = self.match(response)
        if transaction is None:
            return None
        status = response.status or 0
        if status < 200:
            # Proceeding (17.1.2.2): keep retransmitting, but only every T2.
            if transaction.next_send is not None:
                transaction.interval = self.t2_s
                transaction.next_send = now + self.t2_s
                self._schedule(transaction)
            return None
        transaction.status = status
        self._remove(transaction)
        return transaction

    def due(self, now: float) -> tuple[list[ClientTransaction], list[ClientTransaction]]:
        """(to retransmit now, timed out and removed). Retransmissions are
        rescheduled by the doubling rule before they are returned."""
        timed_out: list[ClientTransaction] = []
        for transaction in self._pending.values():
            if transaction.started + self.timeout_s > now:
                break
            timed_out.append(transaction)
        for transaction in timed_out:
            self._remove(transaction)
        resend: list[ClientTransaction] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, key = heapq.heappop(timers)
            live = self._pending.get(key)
            if live is None or live.next_send != at:
                continue  # completed, timed out or rescheduled since
            live.retransmissions += 1
            live.interval = min(live.interval * 2, self.t2_s)
            live.next_send = now + live.interval
            self._schedule(live)
            resend.append(live)
        return resend, timed_out

    def next_deadline(self) -> float | None:
        """When ``due`` next has something to do (None: nothing pending)."""
        if not self._pending:
            return None
        oldest = next(iter(self._pending.values()))
        deadline = oldest.started + self.timeout_s
        timers = self._timers
        while timers:
            at, key = timers[0]
            transaction = self._pending.get(key)
            if transaction is not None and transaction.next_send == at:
                return min(deadline, at)
            heapq.heappop(timers)
        return deadline

    def drop_device(self, device_id: str) -> list[ClientTransaction]:
        """Give up a device's requests (it unregistered or expired)."""
        gone = [t for t in self._pending.values() if t.device_id == device_id]
        for transaction in gone:
            self._remove(transaction)
        return gone

    def _remove(self, transaction: ClientTransaction) -> None:
        self._pending.pop(transaction.key, None)
        self._by_call.pop((transaction.call_id, transaction.cseq), None)


class ServerTransactions:
    """Responses sent over UDP, by request (Via branch, Call-ID, CSeq, From
    tag), bounded in count and bytes (each response echoes its Via): a device
    retransmitting under load would otherwise land every keepalive, catalog
    and alarm twice, and a flood of distinct requests would grow it unbounded."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float = TIMER_J_S) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        # Insertion order is age order (``remember`` moves an entry to the end).
        self._answered: dict[ServerKey, tuple[bytes, float]] = {}
        self.bytes = 0
        self.evicted = 0  # entries forgotten before their Timer J ran out

    def __len__(self) -> int:
        return len(self._answered)

    @staticmethod
    def key(message: sip.SipMessage) -> ServerKey:
        via = message.get("Via") or ""
        return (
            sip.header_params(via).get("branch", ""),
            message.call_id or "",
            message.get("CSeq") or "",
            sip.tag_of(message.get("From") or "") or "",
        )

    @classmethod
    def keyed(cls, message: sip.SipMessage) -> ServerKey | None:
        """The key of ``message``, or None when it lacks a branch, Call-ID or
        CSeq (nothing to match a retransmission by)."""
        key = cls.key(message)
        return key if all(key[:3]) else None

    def answer_of(self, message: sip.SipMessage) -> bytes | None:
        """The response already sent to ``message`` (``PENDING`` while its
        rows land), or None for a new request."""
        found = self._answered.get(self.key(message))
        return found[0] if found is not None else None

    def remember(self, key: ServerKey, data: bytes, now: float) -> None:
        old = self._answered.pop(key, None)
        if old is not None:
            self.bytes -= len(old[0])
        self._answered[key] = (data, now)
        self.bytes += len(data)
        if len(self._answered) > self.max_entries or self.bytes > self.max_bytes:
            self.forget(now)

    def forget(self, now: float) -> None:
        """Drop what Timer J is done with, and the oldest beyond the bounds."""
        before = now - self.ttl_s
        answered = self._answered
        # Stop at the first one young enough and within the bounds.
        while answered:
            key, (data, at) = next(iter(answered.items()))
            if at >= before and len(answered) <= self.max_entries and self.bytes <= self.max_bytes:
                break
            del answered[key]
            self.bytes -= len(data)
            if at >= before:
                self.evicted += 1
