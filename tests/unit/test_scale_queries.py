"""The query load process's files: the rows the orchestrator reads back and
the status it shows while the run goes."""

from __future__ import annotations

import http.server
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from citylake_devstack.scale.fleet import read_status
from citylake_devstack.scale.queries import read_rows, start_at, status_of, write_rows
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


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_the_process_waits_ready_for_go_and_then_sends_at_its_rate(tmp_path: Path) -> None:
    """Its start-up is not counted against its rate: it says it is ready and
    sends nothing until told t = 0, then sends every request due from then."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    status, go, out = tmp_path / "queries.json", tmp_path / "queries.go", tmp_path / "queries.jsonl"
    process = subprocess.Popen([
        sys.executable, "-m", "citylake_devstack.scale.queries", "--url", f"http://127.0.0.1:{server.server_port}",
        "--rate", "40", "--go", str(go), "--status", str(status), "--out", str(out),
    ])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not read_status(status).get("ready"):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.0)
        assert read_status(status)["sent"] == 0, "nothing is sent before the go"
        t0 = time.monotonic() + 0.1
        start_at(go, t0)
        time.sleep(0.1 + 2.0)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        server.shutdown()
    rows = read_rows(out)
    assert all(q.status == 200 and q.t >= 0 for q in rows)
    assert 0.9 * 80 <= len(rows) <= 1.1 * 80 + 2, len(rows)
