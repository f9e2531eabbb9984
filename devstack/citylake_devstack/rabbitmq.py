"""Debian's RabbitMQ broker as a plain child process (not the system service)
on free ports, with its own node name, Erlang cookie (HOME), epmd port,
Mnesia and log folders in the test's directory, and a user of its own."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # the wrapper in /usr/sbin su's to rabbitmq


@dataclass
class RabbitMq:
    process: ManagedProcess
    port: int
    user: str
    password: str
    node: str
    epmd_port: int

    @property
    def url(self) -> str:
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}/"


def start_rabbitmq(workdir: Path, timeout_s: float = 60) -> RabbitMq:
    if not SERVER.exists():
        raise ComponentUnavailable(
            f"{SERVER} not found; install Debian's rabbitmq-server (tools/setup/apt.sh)"
        )
    port, dist, epmd = free_port(), free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    user, password = "citylake", secrets.token_hex(12)
    node = f"citylake-{port}@localhost"
    conf = workdir / "rabbitmq.conf"
    conf.write_text(
        "\n".join([
            f"listeners.tcp.default = 127.0.0.1:{port}",
            f"default_user = {user}",
            f"default_pass = {password}",
            "loopback_users = none",
            "log.console = true",
            "log.console.level = warning",
            "log.file = false",
        ]) + "\n"
    )  # fmt: skip
    (workdir / "enabled_plugins").write_text("[].\n")  # no management plugin: nothing else listens
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    env = {
        "HOME": str(home),  # the Erlang cookie lives here
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "ERL_EPMD_PORT": str(epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_CONFIG_FILE": str(conf),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"),
        "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
        "RABBITMQ_ALLOW_INPUT": "",
    }
    process = ManagedProcess("rabbitmq", [str(SERVER)], workdir / "rabbitmq.out", env=env).start()
    broker = RabbitMq(process, port, user, password, node, epmd)
    try:
        process.wait_until(lambda: _amqp_answers(port), timeout_s, "RabbitMQ's AMQP listener")
    except ComponentUnavailable:
        stop_rabbitmq(broker)
        raise
    return broker


def stop_rabbitmq(broker: RabbitMq) -> None:
    broker.process.stop(timeout_s=20)
    # The broker started an epmd daemon on its own port, which outlives it:
    # ask that one (and only that one) to exit.
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    subprocess.run([epmd, "-kill"], env={**os.environ, "ERL_EPMD_PORT": str(broker.epmd_port)},
                   capture_output=True, timeout=10, check=False)  # fmt: skip


def _amqp_answers(port: int) -> bool:
    """The broker answers a protocol header with its Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(8)[:1] == b"\x01"  # a method frame
    except OSError:
        return False


__all__ = ["RabbitMq", "start_rabbitmq", "stop_rabbitmq"]
