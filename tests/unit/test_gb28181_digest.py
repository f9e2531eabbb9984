"""RFC 2617 digest: the RFC's own vector, nonces, verdicts."""

from __future__ import annotations

from citylake.ingest.gb28181.digest import DigestAuthenticator, Verdict, expected_response, parse_digest
from citylake.ingest.gb28181.peer import Peer, PeerAuth


def test_rfc2617_example_vector() -> None:
    # RFC 2617 section 3.5.
    assert (
        expected_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "auth",
            "00000001",
            "0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def _authorization(
    auth: DigestAuthenticator, password: str, qop: bool = True, nonce: str | None = None
) -> str:
    params = parse_digest(auth.challenge())
    assert params is not None
    nonce = nonce or params["nonce"]
    user, uri = "34020000001320000001", "sip:34020000002000000001@3402000000"
    if qop:
        response = expected_response(
            user, auth.realm, password, "REGISTER", uri, nonce, "auth", "00000001", "c1"
        )
        return (
            f'Digest username="{user}", realm="{auth.realm}", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="c1"'
        )
    response = expected_response(user, auth.realm, password, "REGISTER", uri, nonce)
    return f'Digest username="{user}",realm="{auth.realm}",nonce="{nonce}",uri="{uri}",response="{response}"'


def test_verdicts() -> None:
    auth = DigestAuthenticator("3402000000")
    assert auth.verify(_authorization(auth, "pw"), "REGISTER", "pw")[0] is Verdict.OK
    assert auth.verify(_authorization(auth, "pw", qop=False), "REGISTER", "pw")[0] is Verdict.OK
    verdict, why = auth.verify(_authorization(auth, "other"), "REGISTER", "pw")
    assert verdict is Verdict.WRONG and "wrong digest response" in why
    assert auth.verify(_authorization(auth, "pw"), "MESSAGE", "pw")[0] is Verdict.WRONG
    assert auth.verify("Basic abc", "REGISTER", "pw")[0] is Verdict.MALFORMED
    assert auth.verify('Digest username="a"', "REGISTER", "pw")[0] is Verdict.MALFORMED
    forged = _authorization(auth, "pw", nonce="1234.deadbeef")
    assert auth.verify(forged, "REGISTER", "pw")[0] is Verdict.STALE


def test_nonces_expire_and_are_bound_to_the_key() -> None:
    now = [1000.0]
    auth = DigestAuthenticator("r", nonce_ttl_s=30, clock=lambda: now[0])
    nonce = auth.new_nonce()
    assert auth.nonce_fresh(nonce)
    now[0] += 31
    assert not auth.nonce_fresh(nonce)
    assert not DigestAuthenticator("r", clock=lambda: 1000.0).nonce_fresh(nonce)
    assert "stale=true" in auth.challenge(stale=True)
    assert 'qop="auth"' in auth.challenge()


def test_parse_digest_handles_quotes_and_commas() -> None:
    params = parse_digest('Digest realm="a, b", nonce="n\\"q", qop=auth, nc=00000001')
    assert params == {"realm": "a, b", "nonce": 'n"q', "qop": "auth", "nc": "00000001"}
    assert parse_digest("Bearer x") is None


def test_wrong_passwords_are_limited_per_source_address_and_the_addresses_bounded() -> None:
    auth = PeerAuth("3402000000", 300.0, max_nonces=3, failures_max=2, failure_window_s=60.0)
    camera, other = Peer("udp", ("10.0.0.5", 5060)), Peer("tcp", ("10.0.0.6", 40000))
    auth.failed(camera)
    assert not auth.limited(camera)
    auth.failed(Peer("tcp", ("10.0.0.5", 41000)))  # the same host on another port and transport
    assert auth.limited(camera) and not auth.limited(other)
    for n in range(3):  # three more hosts: the oldest (the camera's) is forgotten
        auth.failed(Peer("udp", (f"10.0.1.{n}", 5060)))
    assert not auth.limited(camera)


def test_a_registration_is_bound_to_its_peer() -> None:
    assert Peer("udp", ("10.0.0.5", 5060)) == Peer("udp", ("10.0.0.5", 5060))
    assert Peer("udp", ("10.0.0.5", 5060)) != Peer("tcp", ("10.0.0.5", 5060))
    assert str(Peer("tcp", ("10.0.0.5", 5061))) == "tcp://10.0.0.5:5061"
