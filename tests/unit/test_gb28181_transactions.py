"""The platform's client transactions: fresh identifiers, RFC 3261 timers
(E doubling to T2, F giving up), matching by branch or Call-ID + CSeq, bound;
and the server side's response cache (Timer J, bounded by count and bytes)."""

from __future__ import annotations

import pytest

from citylake.ingest.gb28181 import sip
from citylake.ingest.gb28181.transactions import (
    PENDING,
    T1_S,
    T2_S,
    TIMER_F_S,
    TIMER_J_S,
    ClientTransactions,
    NewRequest,
    PendingFull,
    ServerTransactions,
)

ADDR = ("127.0.0.1", 5070)


def response(
    ids: NewRequest, status: int = 200, branch: str | None = None, method: str = "MESSAGE"
) -> sip.SipMessage:
    via = "SIP/2.0/UDP 127.0.0.1:5060" + (f";branch={branch}" if branch is not None else "")
    return sip.SipMessage(
        status=status,
        headers=[("Via", via), ("Call-ID", ids.call_id), ("CSeq", f"{ids.cseq} {method}")],
    )


def started(pending: ClientTransactions, transport: str = "udp", now: float = 0.0) -> NewRequest:
    ids = pending.new_request("127.0.0.1")
    pending.start(ids, "34020000001327000001", "MESSAGE", b"MESSAGE ...", transport, ADDR, now)
    return ids


def test_every_request_gets_fresh_identifiers_and_the_next_cseq() -> None:
    pending = ClientTransactions()
    ids = [pending.new_request("10.0.0.1") for _ in range(50)]
    assert len({i.call_id for i in ids}) == 50 and all(i.call_id.endswith("@10.0.0.1") for i in ids)
    assert len({i.from_tag for i in ids}) == 50
    assert len({i.branch for i in ids}) == 50 and all(i.branch.startswith("z9hG4bK") for i in ids)
    assert [i.cseq for i in ids] == list(range(1, 51))


def test_udp_retransmits_by_timer_e_until_a_final_response() -> None:
    pending = ClientTransactions()
    ids = started(pending)
    sent_at = []
    now = 0.0
    while now < 12:
        now = round(now + 0.05, 2)
        resend, timed_out = pending.due(now)
        assert timed_out == []
        sent_at += [now] * len(resend)
    # T1, then doubling (1, 2 s) up to T2 = 4 s: 0.5, 1.5, 3.5, 7.5, 11.5.
    assert sent_at == [T1_S, 1.5, 3.5, 7.5, 11.5]
    assert pending.next_deadline() == pytest.approx(15.5)
    done = pending.on_response(response(ids, branch=ids.branch), now)
    assert done is not None and done.status == 200 and done.retransmissions == 5
    assert len(pending) == 0 and pending.next_deadline() is None
    assert pending.due(100) == ([], [])


def test_provisional_response_slows_retransmission_to_t2() -> None:
    pending = ClientTransactions()
    ids = started(pending)
    assert pending.on_response(response(ids, 100, ids.branch), 0.1) is None
    assert pending.due(0.6) == ([], [])
    resend, _ = pending.due(0.1 + T2_S)
    assert len(resend) == 1
    assert len(pending) == 1


def test_tcp_is_not_retransmitted_but_times_out_by_timer_f() -> None:
    pending = ClientTransactions()
    started(pending, "tcp")
    assert pending.due(TIMER_F_S - 0.1) == ([], [])
    resend, timed_out = pending.due(TIMER_F_S)
    assert resend == [] and len(timed_out) == 1 and len(pending) == 0


def test_timer_f_ends_an_unanswered_udp_request() -> None:
    pending = ClientTransactions()
    ids = started(pending)
    _, timed_out = pending.due(TIMER_F_S + 0.01)
    assert [t.call_id for t in timed_out] == [ids.call_id]
    # A late answer matches nothing.
    assert pending.on_response(response(ids, branch=ids.branch), TIMER_F_S + 1) is None


def test_responses_match_by_branch_or_by_call_id_and_cseq() -> None:
    pending = ClientTransactions()
    by_branch, by_call = started(pending), started(pending)
    other = pending.new_request("127.0.0.1")  # never started
    assert pending.on_response(response(other, branch=other.branch), 0.1) is None
    assert pending.on_response(response(by_branch, method="REGISTER", branch=by_branch.branch), 0.1) is None
    # A wrong CSeq number under the right branch is not this transaction's.
    wrong = NewRequest(by_branch.call_id, by_branch.from_tag, by_branch.branch, by_branch.cseq + 7)
    assert pending.on_response(response(wrong, branch=by_branch.branch), 0.1) is None
    done = pending.on_response(response(by_branch, branch=by_branch.branch), 0.2)
    assert done is not None and done.call_id == by_branch.call_id
    # An RFC 2543 device that drops the branch: Call-ID and CSeq find it.
    done = pending.on_response(response(by_call), 0.3)
    assert done is not None and done.call_id == by_call.call_id
    assert len(pending) == 0


def test_pending_requests_are_bounded() -> None:
    pending = ClientTransactions(max_pending=3)
    for _ in range(3):
        started(pending)
    with pytest.raises(PendingFull, match="3 requests already await an answer"):
        started(pending)
    assert len(pending) == 3


def test_a_device_going_away_drops_its_requests() -> None:
    pending = ClientTransactions()
    ids = started(pending)
    assert [t.call_id for t in pending.drop_device("34020000001327000001")] == [ids.call_id]
    assert len(pending) == 0 and pending.due(1.0) == ([], [])


def request(branch: str, call_id: str = "c1@dev", cseq: str = "1 MESSAGE") -> sip.SipMessage:
    return sip.SipMessage(
        method="MESSAGE",
        uri="sip:34020000002000000001@3402000000",
        headers=[
            ("Via", f"SIP/2.0/UDP 10.0.0.5:5060;branch={branch}"),
            ("From", "<sip:34020000001320000001@3402000000>;tag=f1"),
            ("Call-ID", call_id),
            ("CSeq", cseq),
        ],
    )


def test_a_retransmitted_request_finds_its_answer_until_timer_j() -> None:
    cache = ServerTransactions(max_entries=10, max_bytes=10_000)
    first = request("z9hG4bK-1")
    key = ServerTransactions.keyed(first)
    assert key is not None and cache.answer_of(first) is None
    cache.remember(key, PENDING, 0.0)  # rows still landing
    assert cache.answer_of(request("z9hG4bK-1")) == PENDING
    cache.remember(key, b"SIP/2.0 200 OK", 1.0)
    assert cache.answer_of(request("z9hG4bK-1")) == b"SIP/2.0 200 OK" and cache.bytes == 14
    # Another branch, Call-ID or CSeq is another request.
    assert cache.answer_of(request("z9hG4bK-2")) is None
    assert cache.answer_of(request("z9hG4bK-1", cseq="2 MESSAGE")) is None
    cache.forget(1.0 + TIMER_J_S - 0.1)
    assert len(cache) == 1
    cache.forget(1.0 + TIMER_J_S + 0.1)
    assert len(cache) == 0 and cache.bytes == 0 and cache.evicted == 0  # expired, not evicted


def test_the_response_cache_is_bounded_by_count_and_bytes_oldest_first() -> None:
    cache = ServerTransactions(max_entries=3, max_bytes=100)
    for n in range(5):
        cache.remember((f"b{n}", "c", "1 MESSAGE", "t"), b"x" * 10, float(n))
    assert len(cache) == 3 and cache.evicted == 2
    assert cache.answer_of(request("b0", call_id="c")) is None
    cache.remember(("big", "c", "1 MESSAGE", "t"), b"y" * 90, 5.0)
    assert cache.bytes <= 100 and cache.evicted == 4


def test_a_request_without_branch_call_id_or_cseq_is_not_cached() -> None:
    bare = sip.SipMessage(method="MESSAGE", uri="sip:x@y", headers=[("Via", "SIP/2.0/UDP 10.0.0.5:5060")])
    assert ServerTransactions.keyed(bare) is None
