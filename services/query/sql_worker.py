"""One SQL worker: a process of its own that runs analyst SQL under a hard
memory limit, so no query can take the query service down.

DuckDB's ``memory_limit`` does not bound everything: one 2,048-row vector of
``repeat('x', 1000000)`` is 2 GB of strings before any result batch exists
to be measured. Here the kernel bounds the whole process (``RLIMIT_AS``): an
allocation past it fails, DuckDB reports it as out of memory, and the worker
answers 400 and serves the next query. Should it die instead, the service
starts another (services/query/sql_pool.py).

Run by the service as ``python -m citylake.services.query.sql_worker
<data_dir> <services.query config as JSON>``; frames (services/query/sql_frames.py)
on stdin and on the stdout it had at start, which is then pointed at stderr so
a stray print cannot corrupt the protocol.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from pathlib import Path

import psutil

MIB = 1024 * 1024
# glibc gives each thread a 64 MiB malloc arena of address space; under
# RLIMIT_AS that reservation, not use, would fail allocations first.
_M_ARENA_MAX = -8
_PR_SET_PDEATHSIG = 1


def _bound_process(memory_mb: int) -> None:
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_ARENA_MAX, 2)
    # Dies with the service even while a query runs (EOF on stdin is seen only between queries).
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    limit = memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def address_space_mb() -> int:
    """This process's mapped address space (VmSize), what RLIMIT_AS counts."""
    return int(psutil.Process().memory_info().vms) // 2**20


def duckdb_memory_mb(memory_mb: int, used_mb: int) -> int:
    """DuckDB's own limit inside the worker: half of what the process has left,
    so DuckDB spills or refuses cleanly before the hard limit, with room for
    the result and its encoding."""
    return max(64, (memory_mb - used_mb) // 2)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        sys.stderr.write("usage: python -m citylake.services.query.sql_worker <data_dir> <config JSON>\n")
        return 2
    from citylake.config import ServiceConfig

    config = ServiceConfig.model_validate_json(argv[2])
    _bound_process(config.sql_memory_mb)
    answer_fd = os.dup(1)
    os.dup2(2, 1)

    from citylake.schemas import DataLayout
    from citylake.services.query.sandbox import Limits, SandboxedLake
    from citylake.services.query.sql_frames import PeerGone, read_frame, write_frame
    from citylake.services.query.sql_run import run_one

    layout = DataLayout(Path(argv[1]).absolute())
    limits = Limits(
        memory_limit_mb=duckdb_memory_mb(config.sql_memory_mb, address_space_mb()),
        threads=config.duckdb_threads,
        temp_dir=layout.data_dir / "tmp" / "query-sql" / str(os.getpid()),
        temp_max_mb=config.sql_temp_max_mb,
    )
    lake = SandboxedLake(layout, limits)
    write_frame(answer_fd, {"ready": True, "duckdb_memory_mb": limits.memory_limit_mb})
    try:
        while True:
            try:
                request, _ = read_frame(0)
            except PeerGone:
                return 0
            header, body = run_one(lake, config, str(request["sql"]), str(request["format"]))
            write_frame(answer_fd, header, body)
    finally:
        lake.close()
        if limits.temp_dir is not None and limits.temp_dir.is_dir():
            for leftover in limits.temp_dir.iterdir():
                leftover.unlink(missing_ok=True)
            limits.temp_dir.rmdir()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
