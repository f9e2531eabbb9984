"""The query service's small parts on their own: Accept negotiation, cursor
tokens, instants and the cancelling deadline."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb
import pytest

from citylake.services.query import paging
from citylake.services.query.deadline import deadline
from citylake.services.query.errors import QueryError
from citylake.services.query.instants import parse_instant
from citylake.services.query.negotiation import ARROW_STREAM, Representation, negotiate


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, Representation.json),
        ("", Representation.json),
        ("*/*", Representation.json),
        ("application/json", Representation.json),
        ("text/html", Representation.json),
        (ARROW_STREAM, Representation.arrow),
        (f"{ARROW_STREAM}, */*", Representation.arrow),
        (f"application/json, {ARROW_STREAM}", Representation.arrow),
        (f"application/json, {ARROW_STREAM};q=0.9", Representation.json),
        (f"application/json;q=0.5, {ARROW_STREAM}", Representation.arrow),
        (f"{ARROW_STREAM};q=0", Representation.json),
        (f"{ARROW_STREAM};q=oops", Representation.json),
        ("APPLICATION/VND.APACHE.ARROW.STREAM", Representation.arrow),
        (",,;q=1,", Representation.json),
    ],
)
def test_negotiate(accept: str | None, expected: Representation) -> None:
    assert negotiate(accept) is expected


QUERY = {"route": "readings", "device_id": "air-1", "from": "a", "to": "b", "metric": None}


def test_cursor_tokens_round_trip_and_refuse_edits() -> None:
    token = paging.encode(QUERY, [123, "temp"])
    assert paging.decode(token, QUERY) == [123, "temp"]
    payload, mac = token.split(".")
    edits = [
        token[:-1],
        token + "A",
        f"{payload}A.{mac}",
        f"{payload[1:]}.{mac}",
        f"{mac}.{payload}",
        token.replace(".", ""),
        "",
        "..",
        "ü.ü",
    ]
    for edited in edits:
        with pytest.raises(QueryError) as refused:
            paging.decode(edited, QUERY)
        assert refused.value.status_code == 400
    with pytest.raises(QueryError, match="different query"):
        paging.decode(token, {**QUERY, "metric": "pm25"})


def test_instant_keys_are_exact_microseconds() -> None:
    moment = datetime(2026, 11, 25, 8, 0, 0, 123456, tzinfo=UTC)
    assert paging.instant_from_key(paging.instant_key(moment)) == moment
    with pytest.raises(QueryError):
        paging.instant_from_key("123")
    with pytest.raises(QueryError):
        paging.instant_from_key(10**30)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T08:00:00Z", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("2026-11-25T16:00:00+08:00", datetime(2026, 11, 25, 8, tzinfo=UTC)),
        ("2026-11-25T08:00:00.5-00:30", datetime(2026, 11, 25, 8, 30, 0, 500000, tzinfo=UTC)),
        (" 2026-11-25T08:00Z ", datetime(2026, 11, 25, 8, tzinfo=UTC)),
    ],
)
def test_instants_parse_to_utc(text: str, expected: datetime) -> None:
    assert parse_instant(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("2026-11-25T08:00:00", "no time zone"),
        ("tomorrow", "not an ISO 8601"),
        ("9999-12-31T23:59:59-01:00", "out of the range"),
    ],
)
def test_bad_instants_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_instant(text)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant(1764057600)


def test_deadline_really_cancels_the_query() -> None:
    connection = duckdb.connect()
    cursor = connection.cursor()
    started = time.monotonic()
    with pytest.raises(QueryError) as late, deadline(cursor, 0.2, "sql_timeout_s"):
        cursor.execute("SELECT count(*) FROM range(1000000000000)").fetchall()
    assert late.value.status_code == 408
    assert late.value.limit == "sql_timeout_s"
    assert time.monotonic() - started < 3
    # The cursor is usable again, and a query within its time is untouched.
    with deadline(cursor, 5, "sql_timeout_s"):
        assert cursor.execute("SELECT 42").fetchall() == [(42,)]
    time.sleep(0.05)
    assert cursor.execute("SELECT 1").fetchall() == [(1,)]
    connection.close()
