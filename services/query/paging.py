"""Keyset paging: ``limit`` plus an opaque ``cursor`` token naming where the
next page starts.

A token is ``base64url(payload).base64url(mac)``. The payload holds the last
row's sort key and a fingerprint of the query it belongs to; the MAC is
HMAC-SHA256 under a fixed key. The key is deliberately not secret: positions
are not confidential (a client can ask for the same rows with ``from``), so the
MAC's job is to detect a token that was edited, truncated or pasted into a
different query, and answer 400, never to authenticate. A fixed key keeps
tokens valid across restarts and across replicas behind one Dapr app id.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import orjson

from citylake.services.query.errors import QueryError, bad_request

_MAC_KEY = b"citylake.query.page-cursor"
_MAC_BYTES = 12
_VERSION = 1
MAX_TOKEN_CHARS = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

QueryIdentity = Mapping[str, str | None]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _fingerprint(query: QueryIdentity) -> str:
    return _b64(hashlib.sha256(orjson.dumps(dict(query), option=orjson.OPT_SORT_KEYS)).digest()[:9])


def _mac(payload: bytes) -> bytes:
    return hmac.new(_MAC_KEY, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode(query: QueryIdentity, position: list[str | int]) -> str:
    payload = orjson.dumps({"v": _VERSION, "q": _fingerprint(query), "p": position})
    return f"{_b64(payload)}.{_b64(_mac(payload))}"


def decode(token: str, query: QueryIdentity) -> list[object]:
    """The position in ``token``; a 400 naming the problem if it is not one this
    service issued for ``query``."""
    invalid = "the `cursor` parameter is not a token this service issued; start again without it"
    try:
        payload_text, mac_text = token.split(".")
        payload, mac = _unb64(payload_text), _unb64(mac_text)
    except (ValueError, binascii.Error):
        raise bad_request(invalid) from None
    if not hmac.compare_digest(mac, _mac(payload)):
        raise bad_request(invalid)
    body = orjson.loads(payload)  # the MAC matched: these are bytes encode() wrote
    if body.get("v") != _VERSION:
        raise bad_request("the `cursor` token comes from another version of the service; start again")
    if body.get("q") != _fingerprint(query):
        raise bad_request(
            "the `cursor` token belongs to a different query; keep every other parameter as on the "
            "first page, or start again without a cursor"
        )
    position: list[object] = body["p"]
    return position


def damaged() -> QueryError:
    return bad_request("the `cursor` token is damaged; start again without it")


def instant_key(moment: datetime) -> int:
    """An instant as integer microseconds since the epoch: exact, unlike a float."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def instant_from_key(key: object) -> datetime:
    if not isinstance(key, int):
        raise damaged()
    try:
        return _EPOCH + timedelta(microseconds=key)
    except OverflowError:
        raise damaged() from None
