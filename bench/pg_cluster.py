"""A throwaway PostgreSQL cluster for benchmarks: Debian's PostgreSQL 15
binaries, a data directory of the bench's own, a free port, stopped at the end.

PostgreSQL refuses to run as root; as root the cluster belongs to the
``postgres`` system user (Debian's package creates it) and every server
command runs through ``runuser``. Clients connect over the Unix socket in the
data directory (TCP listens on 127.0.0.1 too).

The settings below only make loading fast and are what a throwaway copy
can afford (no fsync, no WAL beyond the minimum, no autovacuum: the bench
vacuums and analyses itself); query settings stay PostgreSQL's defaults but
``shared_buffers``.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import subprocess
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "bench"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_buffers": "'1GB'",
    "maintenance_work_mem": "'1GB'",
    "max_parallel_maintenance_workers": "2",
    "max_wal_size": "'2GB'",  # the load skips the WAL (one transaction, wal_level minimal)
    "checkpoint_timeout": "'30min'",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "autovacuum": "off",
    "logging_collector": "off",
}


class PostgresUnavailable(RuntimeError):
    """PostgreSQL 15 (or the driver) is missing; the message says what to install."""


def require_binaries() -> None:
    if not (PG_BIN / "pg_ctl").exists():
        raise PostgresUnavailable(
            f"PostgreSQL 15 not found in {PG_BIN}; run tools/setup/bench.sh (Debian's postgresql-15)"
        )


class PgCluster:
    """``datadir`` is created by ``init()`` and reused by ``start()`` when it exists."""

    def __init__(self, datadir: Path, port: int) -> None:
        self.datadir = datadir
        self.port = port
        self.as_postgres = os.geteuid() == 0

    @property
    def owner(self) -> str:
        return "postgres" if self.as_postgres else getpass.getuser()

    def _run(self, *argv: str, timeout: float = 600) -> str:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(argv[:2])} failed: {done.stderr.strip() or done.stdout}")
        return done.stdout

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        require_binaries()
        if self.initialised:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            shutil.chown(self.datadir, user.pw_uid, user.pw_gid)
            _traversable(self.datadir.parent)
        self.datadir.chmod(0o700)
        # C collation: ids compare byte by byte, as in DuckDB and Parquet statistics.
        self._run("initdb", "-D", str(self.datadir), "-U", USER, "-A", "trust", "-E", "UTF8", "--locale=C")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# bench_services.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SETTINGS.items())
            conf.write(f"unix_socket_directories = '{self.datadir}'\n")

    def start(self) -> None:
        log = self.datadir / "server.log"
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(log), "-w", "-t", "300",
            "-o", f"-p {self.port}", "start",
        )  # fmt: skip

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "300", "stop")

    def conninfo(self) -> str:
        return f"host={self.datadir} port={self.port} user={USER} dbname=postgres"


def _traversable(workdir: Path) -> None:
    """The postgres user must reach the data directory: the bench's own folder
    is opened for traversal (not for reading); its parents must already be."""
    workdir.chmod(workdir.stat().st_mode | 0o011)
    for folder in workdir.parents:
        if not folder.stat().st_mode & 0o001:
            raise PostgresUnavailable(
                f"{folder} is not traversable by the postgres user; use a --workdir under /tmp or /work"
            )
