"""Request paths and bearer tokens. Pure: no I/O. Payloads are decoded by the
MQTT adapter's ``JsonReadingsCodec`` (the same shapes, the same reasons)."""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from urllib.parse import unquote

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


class PathTemplate:
    """``/v1/push/{device_id}``: placeholders are whole path segments."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.segments = template.split("/")
        self.names: list[str | None] = []
        for segment in self.segments:
            match = _PLACEHOLDER.match(segment)
            self.names.append(match.group(1) if match else None)

    def match(self, path: str) -> dict[str, str] | None:
        """The placeholder values in ``path`` (percent-decoded), or ``None``."""
        parts = path.split("/")
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for part, segment, name in zip(parts, self.segments, self.names, strict=True):
            if name is None:
                if part != segment:
                    return None
            elif not part:
                return None
            else:
                values[name] = unquote(part)
        return values


def bearer_token(authorization: bytes | None) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not token.strip():
        return None
    return token.strip()


def token_accepted(token: bytes | None, tokens: Sequence[bytes]) -> bool:
    """Constant-time comparison against every configured token: neither the
    match nor its position leaks through the response time."""
    return token_index(token, tokens) is not None


def token_index(token: bytes | None, tokens: Sequence[bytes]) -> int | None:
    """Which configured token ``token`` is (compared with all, in constant time)."""
    if token is None:
        return None
    found: int | None = None
    for index, candidate in enumerate(tokens):
        if hmac.compare_digest(token, candidate):
            found = index
    return found
