"""HTTP digest authentication (RFC 2617, MD5, qop optional) for REGISTER.

Nonces are ``<issued-at hex>.<HMAC of it>`` (cannot be forged; an old one is
recognised as stale and answered with a fresh challenge, ``stale=true``,
rather than as a wrong password) and are also tracked: a bounded table of
the nonces issued (the oldest forgotten first, ``max_nonces``) with the
nonce counts each has been used with. A nonce counts only while in the
table and younger than ``nonce_ttl_s``; with ``qop=auth`` each use must
bring a higher ``nc`` than the last, without qop a nonce is good once. So a
captured REGISTER replayed from another host, after the 32 s transaction
cache forgot it, is challenged again instead of registering the attacker.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
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
        max_nonces: int = 10_000,
    ) -> None:
        self.realm = realm
        self.nonce_ttl_s = nonce_ttl_s
        self.use_qop = use_qop
        self.max_nonces = max_nonces
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        # nonce -> highest nc used with it (0: issued, not used yet), in issue order.
        self._issued: OrderedDict[str, int] = OrderedDict()
        self.replays = 0  # uses of a nonce (or nc) already used
        self.evicted = 0  # nonces forgotten at max_nonces before their use

    def _sign(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()[:32]

    def new_nonce(self) -> str:
        issued = format(int(self._clock() * 1000), "x")
        nonce = f"{issued}.{self._sign(issued)}.{secrets.token_hex(4)}"
        self._issued[nonce] = 0
        while len(self._issued) > self.max_nonces:
            self._issued.popitem(last=False)
            self.evicted += 1
        return nonce

    def issued(self) -> int:
        return len(self._issued)

    def nonce_fresh(self, nonce: str) -> bool:
        issued, sep, rest = nonce.partition(".")
        signature = rest.partition(".")[0]
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

    def verify(
        self, authorization: str, method: str, password: str, username: str | None = None
    ) -> tuple[Verdict, str]:
        """(verdict, why) for an Authorization header value against ``password``;
        ``username``, when given, is the only user name accepted (the From id).
        An OK uses the nonce count up: the same header is STALE next time."""
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
        if username is not None and params["username"] != username:
            return Verdict.WRONG, f"digest username {params['username'][:40]!r} is not the From id {username}"
        nonce = params["nonce"]
        if not self.nonce_fresh(nonce) or nonce not in self._issued:
            self._issued.pop(nonce, None)
            return Verdict.STALE, "nonce expired or not issued here"
        qop = params.get("qop")
        if qop is not None and (qop != "auth" or "nc" not in params or "cnonce" not in params):
            return Verdict.MALFORMED, f"unsupported qop {qop!r} or missing nc/cnonce"
        try:
            count = int(params["nc"], 16) if qop else 1
        except ValueError:
            return Verdict.MALFORMED, f"nonce count {params['nc'][:16]!r} is not hexadecimal"
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
            return Verdict.WRONG, f"wrong digest response for user {params['username'][:40]!r}"
        if count <= self._issued[nonce]:
            self.replays += 1
            return Verdict.STALE, f"nonce count {count} already used with this nonce (a replay?)"
        if qop:
            self._issued[nonce] = count
        else:
            del self._issued[nonce]  # without nc a nonce is good once
        return Verdict.OK, "ok"
