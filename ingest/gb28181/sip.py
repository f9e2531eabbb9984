"""A small SIP (RFC 3261) message parser and serializer: what a GB28181
platform needs, nothing more.

No maintained Python SIP library exists, and a platform that only answers
REGISTER and MESSAGE needs little: the start line, headers (including the
compact one-letter forms), the body framed by Content-Length, and responses
that copy Via/From/To/Call-ID/CSeq from the request. Pure and typed: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

SIP_VERSION = "SIP/2.0"
CRLF = b"\r\n"

# RFC 3261 section 7.3.3: compact forms.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
}
# Canonical spelling of the headers we read or copy; others keep the sender's.
_CANONICAL = {
    name.lower(): name
    for name in (
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Type",
        "Content-Length",
        "Content-Encoding",
        "Max-Forwards",
        "Expires",
        "Authorization",
        "WWW-Authenticate",
        "User-Agent",
        "Subject",
        "Supported",
        "Date",
        "Allow",
    )
}
REASONS = {
    100: "Trying",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    481: "Call/Transaction Does Not Exist",
    500: "Server Internal Error",
    501: "Not Implemented",
}
_METHOD = re.compile(r"^[A-Z][A-Z0-9_.!%*+`'~-]*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9_.!%*+`'~-]+$")
# Header sections larger than this are garbage or an attack, not signalling.
MAX_HEAD_BYTES = 16 * 1024


class SipParseError(ValueError):
    """A message that is not valid SIP. ``partial`` is what could be read of
    it (a request whose start line parsed), so a 400 can still be answered."""

    def __init__(self, reason: str, partial: SipMessage | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def canonical_name(name: str) -> str:
    lowered = name.strip().lower()
    if lowered in COMPACT:
        return COMPACT[lowered]
    return _CANONICAL.get(lowered, name.strip())


@dataclass
class SipMessage:
    """A request (``method`` set) or a response (``status`` set)."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        """The first value of a header (any spelling, compact or not)."""
        wanted = canonical_name(name).lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        wanted = canonical_name(name).lower()
        return [value for key, value in self.headers if key.lower() == wanted]

    def set(self, name: str, value: str) -> None:
        """Replace every value of ``name`` by one."""
        wanted = canonical_name(name)
        self.headers = [(k, v) for k, v in self.headers if k.lower() != wanted.lower()]
        self.headers.append((wanted, value))

    @property
    def call_id(self) -> str | None:
        return self.get("Call-ID")

    def cseq(self) -> tuple[int, str]:
        """(number, method) of the CSeq header; ValueError if absent or malformed."""
        value = self.get("CSeq")
        if value is None:
            raise ValueError("no CSeq header")
        parts = value.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"malformed CSeq {value!r}")
        return int(parts[0]), parts[1].upper()

    def to_bytes(self) -> bytes:
        """Serialized, with Content-Length always set to the body's length."""
        if self.method is not None:
            start = f"{self.method} {self.uri} {SIP_VERSION}"
        else:
            start = f"{SIP_VERSION} {self.status} {self.reason}"
        lines = [start]
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() != "content-length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def _parse_start(line: str) -> SipMessage:
    if line.startswith(SIP_VERSION + " "):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not (parts[1].isdigit() and len(parts[1]) == 3):
            raise SipParseError(f"malformed status line {line[:80]!r}")
        return SipMessage(status=int(parts[1]), reason=parts[2] if len(parts) == 3 else "")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != SIP_VERSION or not _METHOD.match(parts[0]) or not parts[1]:
        raise SipParseError(f"malformed request line {line[:80]!r}")
    return SipMessage(method=parts[0], uri=parts[1])


def parse_head(head: bytes) -> SipMessage:
    """Start line and headers (no body). Raises ``SipParseError``; when the
    start line of a request parsed, the error carries it and the headers read."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Headers are UTF-8 by RFC 3261; a body may be anything, the head may not.
        text = head.decode("utf-8", errors="replace")
        first = text.split("\r\n", 1)[0]
        try:
            partial = _parse_start(first)
        except SipParseError:
            partial = None
        raise SipParseError(f"SIP header section is not UTF-8 ({exc.reason})", partial) from None
    lines = text.split("\r\n") if "\r\n" in text else text.split("\n")
    message = _parse_start(lines[0].strip())
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            # Obsolete line folding: continuation of the previous header.
            if not message.headers:
                raise SipParseError("header continuation before any header", _partial(message))
            key, value = message.headers[-1]
            message.headers[-1] = (key, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep or not _HEADER_NAME.match(name.strip()):
            raise SipParseError(f"malformed header line {line[:80]!r}", _partial(message))
        message.headers.append((canonical_name(name), value.strip()))
    return message


def _partial(message: SipMessage) -> SipMessage | None:
    return message if message.is_request else None


def content_length(message: SipMessage) -> int | None:
    """The declared body length; None when absent. SipParseError when invalid."""
    value = message.get("Content-Length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise SipParseError(f"malformed Content-Length {value!r}", _partial(message))
    return int(value)


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """(head, rest) at the first blank line; SipParseError if there is none."""
    index = data.find(b"\r\n\r\n")
    if index >= 0:
        return data[:index], data[index + 4 :]
    index = data.find(b"\n\n")
    if index >= 0:
        return data[:index], data[index + 2 :]
    raise SipParseError("no blank line after the SIP headers")


def parse_datagram(data: bytes) -> SipMessage:
    """One message from one UDP datagram. Content-Length is optional over UDP
    (RFC 3261 18.3); when present it must not exceed what arrived."""
    if len(data) > MAX_HEAD_BYTES and data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES) < 0:
        raise SipParseError(f"SIP header section larger than {MAX_HEAD_BYTES} bytes")
    try:
        head, rest = split_head(data)
    except SipParseError as exc:
        # Still try to read the start line so a 400 can be answered.
        raise SipParseError(exc.reason, _partial_from(data)) from None
    message = parse_head(head)
    length = content_length(message)
    if length is None:
        message.body = rest
    elif length > len(rest):
        raise SipParseError(
            f"Content-Length {length} but only {len(rest)} body bytes arrived", _partial(message)
        )
    else:
        message.body = rest[:length]
    return message


def _partial_from(data: bytes) -> SipMessage | None:
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        start = _parse_start(first.decode("utf-8"))
    except (SipParseError, UnicodeDecodeError):
        return None
    if not start.is_request:
        return None
    # Headers that parse are kept (Via, From, ... are needed to answer).
    for line in data.split(b"\n")[1:]:
        name, sep, value = line.rstrip(b"\r").partition(b":")
        if not sep:
            continue
        try:
            key = name.decode("utf-8")
            if _HEADER_NAME.match(key.strip()):
                start.headers.append((canonical_name(key), value.decode("utf-8").strip()))
        except UnicodeDecodeError:
            continue
    return start


@dataclass
class FramingError:
    """Something a stream could not frame; the stream continues after it."""

    reason: str
    raw: bytes
    partial: SipMessage | None


class StreamFramer:
    """Splits a TCP byte stream into messages by Content-Length (mandatory
    over streams, RFC 3261 18.3). A body larger than ``max_body`` is skipped
    (reported once as a ``FramingError``) without being buffered; a header
    section that never ends is reported and the stream must be closed."""

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self._buffer = bytearray()
        self._discard = 0
        self.broken = False

    def feed(self, data: bytes) -> Iterator[SipMessage | FramingError]:
        self._buffer += data
        while True:
            if self._discard:
                dropped = min(self._discard, len(self._buffer))
                del self._buffer[:dropped]
                self._discard -= dropped
                if self._discard:
                    return
            # RFC 5626 keepalives (CRLF) between messages.
            while self._buffer[:2] == CRLF:
                del self._buffer[:2]
            index = self._buffer.find(b"\r\n\r\n")
            if index < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self.broken = True
                    raw = bytes(self._buffer[:MAX_HEAD_BYTES])
                    self._buffer.clear()
                    yield FramingError(
                        f"SIP header section larger than {MAX_HEAD_BYTES} bytes", raw, _partial_from(raw)
                    )
                return
            head = bytes(self._buffer[:index])
            try:
                message = parse_head(head)
                length = content_length(message)
                if length is None:
                    raise SipParseError("no Content-Length on a stream transport", _partial(message))
            except SipParseError as exc:
                # Without a length the next message cannot be found: drop this
                # head and resynchronise on the next blank line.
                del self._buffer[: index + 4]
                yield FramingError(exc.reason, head, exc.partial)
                continue
            if length > self.max_body:
                del self._buffer[: index + 4]
                self._discard = length
                yield FramingError(
                    f"body of {length} bytes exceeds max_body_bytes {self.max_body}",
                    head,
                    message if message.is_request else None,
                )
                continue
            end = index + 4 + length
            if len(self._buffer) < end:
                return
            message.body = bytes(self._buffer[index + 4 : end])
            del self._buffer[:end]
            yield message


# --- header values ----------------------------------------------------------

_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")


def name_addr_uri(value: str) -> str:
    """The URI of a From/To/Contact value: inside <...> or up to the first ';'."""
    found = _URI_IN_BRACKETS.search(value)
    if found:
        return found.group(1).strip()
    return value.split(";", 1)[0].strip()


def uri_user(uri: str) -> str | None:
    """The user part of sip:user@host[:port][;params]."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return None
    user, at, _ = rest.partition("@")
    return user if at and user else None


def uri_host(uri: str) -> str | None:
    """host[:port] of a SIP URI."""
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return None
    _, _, hostport = rest.rpartition("@")
    return hostport.split(";", 1)[0] or None


def header_params(value: str) -> dict[str, str]:
    """;key=value parameters after the name-addr (tag, expires, branch, ...)."""
    rest = value
    close = value.find(">")
    if close >= 0:
        rest = value[close + 1 :]
    else:
        rest = value.partition(";")[2]
        rest = ";" + rest if rest else ""
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, _, val = part.strip().partition("=")
        if key:
            params[key.lower()] = val.strip().strip('"')
    return params


def tag_of(value: str) -> str | None:
    return header_params(value).get("tag")


def build_response(
    request: SipMessage,
    status: int,
    reason: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: str | None = None,
) -> SipMessage:
    """A response copying Via (all, in order), From, To (with our tag added
    when it has none), Call-ID and CSeq from ``request`` (RFC 3261 8.2.6)."""
    response = SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"))
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.get_all(name):
            tagged = value
            if name == "To" and to_tag and tag_of(value) is None:
                tagged = f"{value};tag={to_tag}"
            response.headers.append((name, tagged))
    response.headers.extend(headers)
    response.body = body
    return response


def build_request(
    method: str,
    uri: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
) -> SipMessage:
    return SipMessage(method=method, uri=uri, headers=list(headers), body=body)
