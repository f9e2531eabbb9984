"""Debian's libcoap example server (``coap-server``, package libcoap3-bin) on a
free UDP port, and its ``coap-client``: the real CoAP peers of the CoAP
adapter's tests and simulator. ``coap-server -d N`` creates a resource on the
first PUT to a new path; each is observable, and every later PUT notifies
its observers (RFC 7641) with the payload and Content-Format it was given."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_udp_port


def coap_binary(name: str) -> str:
    """``coap-server``/``coap-client``: Debian ships them per TLS library."""
    for candidate in (name, f"{name}-notls", f"{name}-openssl", f"{name}-gnutls"):
        found = shutil.which(candidate)
        if found is not None:
            return found
    raise ComponentUnavailable(f"{name} not found; install Debian's libcoap3-bin (tools/setup/apt.sh)")


@dataclass
class CoapServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"


def coap_client(
    method: str,
    url: str,
    payload: bytes | None = None,
    content_format: int | None = None,
    timeout_s: float = 5,
) -> subprocess.CompletedProcess[bytes]:
    """One request with libcoap's ``coap-client``; ``stdout`` is the response
    payload, and with ``-v 6`` (``stderr``) the response code."""
    argv = [coap_binary("coap-client"), "-m", method, "-B", str(int(timeout_s)), "-v", "6"]
    if content_format is not None:
        argv += ["-t", str(content_format)]
    if payload is not None:
        argv += ["-f", "-"]
    argv.append(url)
    return subprocess.run(argv, input=payload, capture_output=True, timeout=timeout_s + 5, check=False)


def start_coap_server(workdir: Path, max_dynamic_resources: int = 50) -> CoapServer:
    exe = coap_binary("coap-server")
    port = free_udp_port()
    workdir.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        "coap-server",
        [exe, "-A", "127.0.0.1", "-p", str(port), "-d", str(max_dynamic_resources), "-v", "4"],
        workdir / "coap-server.log",
    ).start()
    deadline = time.monotonic() + 15
    while True:
        probe = coap_client("get", f"coap://127.0.0.1:{port}/.well-known/core", timeout_s=1)
        if probe.returncode == 0 and b"</time>" in probe.stdout:
            return CoapServer(process, port)
        if not process.alive() or time.monotonic() > deadline:
            process.stop()
            raise ComponentUnavailable(f"coap-server did not answer on udp {port}: {process.log_tail()}")
        time.sleep(0.1)
