"""The SIP parser/serializer: start lines, compact headers, framing, responses."""

from __future__ import annotations

import pytest

from citylake.ingest.gb28181 import sip

REGISTER = (
    b"REGISTER sip:34020000002000000001@3402000000 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK1\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n"
    b"f: <sip:34020000001320000001@3402000000>;tag=abc\r\n"
    b"t: <sip:34020000001320000001@3402000000>\r\n"
    b"i: call-1@10.0.0.5\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"m: <sip:34020000001320000001@10.0.0.5:5060>;expires=600\r\n"
    b"Subject: a,\r\n folded\r\n"
    b"l: 0\r\n\r\n"
)


def test_request_with_compact_headers() -> None:
    message = sip.parse_datagram(REGISTER)
    assert message.is_request and message.method == "REGISTER"
    assert message.uri == "sip:34020000002000000001@3402000000"
    assert message.get("Call-ID") == message.get("i") == "call-1@10.0.0.5"
    assert message.get_all("via") == [
        "SIP/2.0/UDP 10.0.0.5:5060;rport;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0",
    ]
    assert message.cseq() == (1, "REGISTER")
    assert message.get("Subject") == "a, folded"
    contact = message.get("Contact")
    assert contact is not None and sip.header_params(contact) == {"expires": "600"}
    sender = message.get("From")
    assert sender is not None
    assert sip.uri_user(sip.name_addr_uri(sender)) == "34020000001320000001"
    assert sip.tag_of(sender) == "abc"
    assert message.body == b""


def test_response_copies_the_transaction_headers_and_tags_to() -> None:
    request = sip.parse_datagram(REGISTER)
    response = sip.build_response(request, 200, headers=[("Expires", "600")], to_tag="xyz")
    data = response.to_bytes()
    parsed = sip.parse_datagram(data)
    assert parsed.status == 200 and parsed.reason == "OK" and not parsed.is_request
    assert parsed.get_all("Via") == request.get_all("Via")
    assert parsed.get("From") == request.get("From")
    assert parsed.get("To") == "<sip:34020000001320000001@3402000000>;tag=xyz"
    assert parsed.get("Call-ID") == "call-1@10.0.0.5"
    assert parsed.get("CSeq") == "1 REGISTER"
    assert parsed.get("Expires") == "600"
    assert data.endswith(b"Content-Length: 0\r\n\r\n")


def test_a_to_tag_already_there_is_kept() -> None:
    request = sip.parse_datagram(
        REGISTER.replace(b"t: <sip:34020000001320000001@3402000000>", b"t: <sip:a@b>;tag=1")
    )
    assert sip.build_response(request, 200, to_tag="new").get("To") == "<sip:a@b>;tag=1"


def test_body_is_framed_by_content_length() -> None:
    body = "<Notify>中</Notify>".encode()
    request = sip.build_request("MESSAGE", "sip:x@y", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK2")], body)
    data = request.to_bytes()
    assert f"Content-Length: {len(body)}".encode() in data
    assert sip.parse_datagram(data + b"trailing junk").body == body


@pytest.mark.parametrize(
    ("data", "reason", "has_partial"),
    [
        (b"HELLO\r\n\r\n", "malformed request line", False),
        (b"\x00\xff\xfe", "no blank line", False),
        (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nbad line\r\n\r\n", "malformed header line", True),
        (
            b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nl: 99\r\n\r\nshort",
            "Content-Length 99 but",
            True,
        ),
        (b"MESSAGE sip:a@b SIP/2.0\r\nl: ten\r\n\r\n", "malformed Content-Length", True),
        (b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nX: \xff\r\n\r\n", "not UTF-8", True),
        (b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n", "no blank line", True),
        (b"SIP/2.0 abc OK\r\n\r\n", "malformed status line", False),
    ],
)
def test_malformed_messages_say_why_and_keep_what_parsed(data: bytes, reason: str, has_partial: bool) -> None:
    with pytest.raises(sip.SipParseError) as caught:
        sip.parse_datagram(data)
    assert reason in caught.value.reason
    assert (caught.value.partial is not None) == has_partial
    if caught.value.partial is not None:
        assert caught.value.partial.method == "MESSAGE"


def _message(n: int, body: bytes = b"") -> bytes:
    headers = [("Via", f"SIP/2.0/TCP h;branch=z9hG4bK{n}"), ("CSeq", f"{n} MESSAGE")]
    return sip.build_request("MESSAGE", "sip:a@b", headers, body).to_bytes()


def test_stream_framer_splits_joins_and_skips_keepalives() -> None:
    framer = sip.StreamFramer(max_body=100)
    stream = b"\r\n\r\n" + _message(1, b"abc") + _message(2) + b"\r\n" + _message(3, b"x" * 10)
    out: list[sip.SipMessage | sip.FramingError] = []
    for i in range(0, len(stream), 7):  # arbitrary chunk boundaries
        out.extend(framer.feed(stream[i : i + 7]))
    assert [m.cseq()[0] for m in out if isinstance(m, sip.SipMessage)] == [1, 2, 3]
    assert [m.body for m in out if isinstance(m, sip.SipMessage)] == [b"abc", b"", b"x" * 10]


def test_stream_framer_skips_an_oversized_body_and_goes_on() -> None:
    framer = sip.StreamFramer(max_body=100)
    out = list(framer.feed(_message(1, b"y" * 5000)[:3000]))
    assert len(out) == 1 and isinstance(out[0], sip.FramingError)
    assert "body of 5000 bytes exceeds max_body_bytes 100" in out[0].reason
    assert out[0].partial is not None and out[0].partial.method == "MESSAGE"
    rest = _message(1, b"y" * 5000)[3000:] + _message(2, b"ok")
    out = list(framer.feed(rest))
    assert len(out) == 1 and isinstance(out[0], sip.SipMessage) and out[0].body == b"ok"


def test_stream_framer_needs_content_length_and_resynchronises() -> None:
    framer = sip.StreamFramer(max_body=100)
    no_length = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n"
    out = list(framer.feed(no_length + _message(2)))
    assert isinstance(out[0], sip.FramingError) and "no Content-Length" in out[0].reason
    assert isinstance(out[1], sip.SipMessage) and out[1].cseq() == (2, "MESSAGE")


def test_stream_framer_gives_up_on_an_endless_head() -> None:
    framer = sip.StreamFramer(max_body=100)
    out = list(framer.feed(b"A" * (sip.MAX_HEAD_BYTES + 10)))
    assert isinstance(out[0], sip.FramingError) and framer.broken


def test_uri_helpers() -> None:
    assert sip.uri_host("sip:34020000001320000001@10.0.0.5:5060;transport=udp") == "10.0.0.5:5060"
    assert sip.uri_user("tel:123") is None
    assert sip.uri_user("sip:host.only") is None
    assert sip.name_addr_uri("sip:a@b;tag=1") == "sip:a@b"
    assert sip.canonical_name("call-id") == "Call-ID" and sip.canonical_name("X-Foo") == "X-Foo"
