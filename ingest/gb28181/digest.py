"""HTTP digest authentication (RFC 2617, MD5, qop optional) for REGISTER.

Nonces are stateless: ``<issued-at hex>.<HMAC of it>``, so a platform holding
10,000 devices keeps no nonce table, a nonce cannot be forged, and an old one
is recognised as stale (answered with a fresh challenge, ``stale=true``)
rather than as a wrong password.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*,?')


class Verdict(Enum):
    OK = "ok"
    STALE = "stale"  # nonce expired or not ours: challenge again
    WRONG = "wrong"  # credentials do not match: 403
    MALFORMED = "malformed"  # not a digest Authorization we can read: challenge again


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def parse_digest(value: str) -> dict[str, str] | None:
    """The parameters of ``Digest k=v, k="v"``; None if not a digest header."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match or match.end() == pos:
            return None
        quoted, bare = match.group(2), match.group(3)
        params[match.group(1).lower()] = quoted.replace('\\"', '"') if quoted is not None else bare
        pos = match.end()
    return params


def expected_response(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    ha1 = md5_hex(f"{username}:{realm}:{password}")
    ha2 = md5_hex(f"{method}:{uri}")
    if qop:
        return md5_hex(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5_hex(f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True)
class Credentials:
    username: str
    params: dict[str, str]


class DigestAuthenticator:
    """Issues challenges and verifies Authorization headers for one realm."""

    def __init__(
        self,
        realm: str,
        nonce_ttl_s: float = 300.0,
        use_qop: bool = True,
        clock: Callable[[], float] = time.time,
        key: bytes | None = None,
    ) -> None:
        self.realm = realm
        self.nonce_ttl_s = nonce_ttl_s
        self.use_qop = use_qop
        self._clock = clock
        self._key = key or secrets.token_bytes(32)

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        issued = format(int(self._clock() * 1000), "x")
        return f"{issued}.{self._sign(issued)}"

    def nonce_fresh(self, nonce: str) -> bool:
        issued, sep, signature = nonce.partition(".")
        if not sep or not hmac.compare_digest(signature, self._sign(issued)):
            return False
        try:
            age_s = self._clock() - int(issued, 16) / 1000
        except ValueError:
            return False
        return -5 <= age_s <= self.nonce_ttl_s

    def challenge(self, stale: bool = False) -> str:
        """The value of a WWW-Authenticate header."""
        parts = [f'Digest realm="{self.realm}"', f'nonce="{self.new_nonce()}"', "algorithm=MD5"]
        if self.use_qop:
            parts.append('qop="auth"')
        if stale:
            parts.append("stale=true")
        return ", ".join(parts)

    def verify(self, authorization: str, method: str, password: str) -> tuple[Verdict, str]:
        """(verdict, why) for an Authorization header value against ``password``."""
        params = parse_digest(authorization)
        if params is None:
            return Verdict.MALFORMED, "Authorization is not a Digest header"
        missing = [k for k in ("username", "nonce", "uri", "response") if k not in params]
        if missing:
            return Verdict.MALFORMED, f"Authorization lacks {', '.join(missing)}"
        algorithm = params.get("algorithm", "MD5")
        if algorithm.upper() != "MD5":
            return Verdict.MALFORMED, f"unsupported digest algorithm {algorithm}"
        if params.get("realm", self.realm) != self.realm:
            return Verdict.WRONG, f"realm {params.get('realm')!r} is not {self.realm!r}"
        if not self.nonce_fresh(params["nonce"]):
            return Verdict.STALE, "nonce expired or not issued here"
        qop = params.get("qop")
        if qop is not None and (qop != "auth" or "nc" not in params or "cnonce" not in params):
            return Verdict.MALFORMED, f"unsupported qop {qop!r} or missing nc/cnonce"
        want = expected_response(
            params["username"],
            self.realm,
            password,
            method,
            params["uri"],
            params["nonce"],
            qop,
            params.get("nc"),
            params.get("cnonce"),
        )
        if not hmac.compare_digest(want, params["response"].lower()):
            return Verdict.WRONG, f"wrong digest response for user {params['username']!r}"
        return Verdict.OK, "ok"
