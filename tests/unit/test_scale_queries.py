"""The query load process's files: the rows the orchestrator reads back and
the status it shows while the run goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from citylake_devstack.scale.queries import read_rows, status_of, write_rows
from citylake_devstack.scalereport.record import Query


def test_rows_round_trip_and_status_counts(tmp_path: Path) -> None:
    queries = [
        Query(0.0051, "latest", 3.14159, 200),
        Query(0.01, "recent", 0.0, 0),
        Query(0.02, "rollups", 12.5, 503),
        Query(0.03, "latest", 2.0, 404),
    ]
    path = write_rows(tmp_path / "queries.jsonl", queries)
    back = read_rows(path)
    assert [(q.kind, q.status) for q in back] == [(q.kind, q.status) for q in queries]
    assert back[0].t == 0.005 and back[0].latency_ms == 3.142
    status = status_of(back, 1.0, True)
    assert status == {"sent": 4, "answered": 3, "failed": 2, "elapsed_s": 1.0, "done": True}


def test_a_malformed_row_is_an_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('[0.1, "latest", 2.0, 200]\n[0.2, "latest"]\n')
    with pytest.raises(ValueError, match=r"queries.jsonl:2: not a \[t, kind"):
        read_rows(path)
