"""How the query service and its SQL workers talk: length-prefixed frames on
a pipe, each a small JSON header and a body of bytes.

Reads take a deadline, so a worker that hangs or dies never holds a request
forever; the header is bounded, so a confused peer cannot make the reader
allocate without limit.
"""

from __future__ import annotations

import os
import select
import struct
import time
from typing import Any

import orjson

_PREFIX = struct.Struct("!IQ")  # header length, body length
MAX_HEADER_BYTES = 1024 * 1024


class PeerGone(EOFError):
    """The other end closed the pipe (the worker exited, or the service did)."""


class TooSlow(TimeoutError):
    """No whole frame arrived before the deadline."""


def write_frame(fd: int, header: dict[str, Any], body: bytes = b"") -> None:
    head = orjson.dumps(header)
    data = memoryview(_PREFIX.pack(len(head), len(body)) + head + body)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    left = size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TooSlow(f"no answer within the time limit ({left} of {size} bytes missing)")
        chunk = os.read(fd, min(left, 1024 * 1024))
        if not chunk:
            raise PeerGone("the pipe was closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(
    fd: int, deadline: float | None = None, max_body: int | None = None
) -> tuple[dict[str, Any], bytes]:
    """One frame from ``fd``; ``deadline`` is a ``time.monotonic()`` instant."""
    head_size, body_size = _PREFIX.unpack(_read_exact(fd, _PREFIX.size, deadline))
    if head_size > MAX_HEADER_BYTES or (max_body is not None and body_size > max_body):
        raise ValueError(f"a frame of {head_size} + {body_size} bytes is larger than allowed")
    header = orjson.loads(_read_exact(fd, head_size, deadline))
    if not isinstance(header, dict):
        raise ValueError("a frame header is not a JSON object")
    return header, _read_exact(fd, body_size, deadline)
