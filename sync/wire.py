"""Bodies on the wire: JSON, zstd where it pays, and decoding with limits.

Lake files are zstd Parquet already, so their chunks go as they are unless a
trial compression of the first chunk saves at least ``MIN_SAVING``; the JSON
of the tree exchange (hashes, leaf lists) compresses well and always pays.
Decoding never inflates past a limit, so a small hostile body cannot become a
huge one in the receiver's memory.
"""

from __future__ import annotations

import io

import orjson
import zstandard

ZSTD = "zstd"
COMPRESS_MIN_BYTES = 512
MIN_SAVING = 0.1
# Level 3 (zstd's default) for JSON and where no link says otherwise: within
# 1 % of the best codec on every link measured (sync/README.md, Compression).
LEVEL = 3


class BodyTooLarge(ValueError):
    """A body larger than the receiver accepts."""


class BadEncoding(ValueError):
    """A body that does not decode as its Content-Encoding says."""


def codec_level(codec: str) -> int | None:
    """``sync.wire_codec`` as a zstd level; None for ``none``."""
    if codec == "none":
        return None
    name, _, level = codec.partition("-")
    if name != ZSTD or not level.isdigit():
        raise ValueError(f"unknown wire codec {codec!r}: expected zstd-<level> or none")
    return int(level)


def compress(data: bytes, level: int = LEVEL) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


def maybe_compress(data: bytes, level: int | None = LEVEL) -> tuple[bytes, str | None]:
    """``data`` zstd-compressed at ``level`` if that saves at least
    ``MIN_SAVING``, with its Content-Encoding; else ``data`` itself and None
    (always for level None: the link's codec is ``none``)."""
    if len(data) < COMPRESS_MIN_BYTES or level is None:
        return data, None
    packed = compress(data, level)
    if len(packed) <= len(data) * (1 - MIN_SAVING):
        return packed, ZSTD
    return data, None


class ChunkEncoder:
    """One file's upload bodies, chunk by chunk: zstd at ``level`` until a
    chunk shows it does not pay, then the rest as they are (a file that does
    not compress in its first chunk will not in the others, and trying costs
    the edge's CPU). The sender and the sync bench's minimum share it."""

    def __init__(self, level: int | None) -> None:
        self.level = level
        self.compressing = level is not None

    def encode(self, chunk: bytes) -> tuple[bytes, str | None]:
        if not self.compressing:
            return chunk, None
        body, encoding = maybe_compress(chunk, self.level)
        self.compressing = encoding is not None
        return body, encoding


def decode(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The decoded body; ``BodyTooLarge`` past ``limit`` decoded bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > limit:
            raise BodyTooLarge(f"body of {len(body)} bytes is larger than the limit of {limit}")
        return body
    if encoding != ZSTD:
        raise BadEncoding(f"unsupported Content-Encoding {encoding!r}; send zstd or identity")
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body), read_across_frames=True) as reader:
            while piece := reader.read(min(1 << 20, limit + 1 - len(out))):
                out += piece
                if len(out) > limit:
                    raise BodyTooLarge(f"body decodes to more than the limit of {limit} bytes")
    except zstandard.ZstdError as exc:
        raise BadEncoding(f"body is not valid zstd: {exc}") from None
    return bytes(out)


def dumps(value: object) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadEncoding(f"body is not JSON: {exc}") from None
