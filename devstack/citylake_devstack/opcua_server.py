"""An OPC UA server played by asyncua's own server, run as its own process:
``python -m citylake_devstack.opcua_server --port P [--user U --password W]``.

It serves one pump under ``Objects`` in namespace 2 (``urn:citylake:devstack``):

| node id | browse path | type | |
|---|---|---|---|
| ``ns=2;s=Pump1.Pressure`` | ``0:Objects/2:Pump1/2:Pressure`` | Double | writable |
| ``ns=2;s=Pump1.Running`` | ``0:Objects/2:Pump1/2:Running`` | Boolean | writable |
| ``ns=2;s=Pump1.State`` | ``0:Objects/2:Pump1/2:State`` | String | writable |
| ``ns=2;i=1001`` | ``0:Objects/2:Pump1/2:Counter`` | Double | +1 every ``--tick-s`` |
| ``ns=2;s=Pump1.Flow`` | ``0:Objects/2:Pump1/2:Flow`` | Double | a sine wave, every ``--tick-s`` |

Writable nodes let a test (or an operator) set exact values, statuses and
source timestamps with any OPC UA client; the timer-driven nodes keep data
flowing without one. With ``--user`` only that user is admitted (anonymous
sessions are refused); ``--cert``/``--key`` add Basic256Sha256 Sign and
SignAndEncrypt endpoints beside the unsecured one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager

from citylake_devstack.process import ManagedProcess, free_port, require_port_free

log = logging.getLogger("citylake_devstack.opcua_server")

NAMESPACE = "urn:citylake:devstack"
READY_LINE = "opcua server ready"


class _OneUser(UserManager):
    """Admits one user name and password (as admin, so it may write values)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username == self.username and password == self.password:
            return User(role=UserRole.Admin, name=username)
        return None


async def serve(
    port: int,
    username: str | None = None,
    password: str | None = None,
    tick_s: float = 0.5,
    cert: Path | None = None,
    key: Path | None = None,
) -> None:
    user_manager = _OneUser(username, password or "") if username is not None else None
    server = Server(user_manager=user_manager)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/citylake")
    server.set_server_name("citylake devstack OPC UA server")
    policies = [ua.SecurityPolicyType.NoSecurity]
    if cert is not None and key is not None:
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        policies += [
            ua.SecurityPolicyType.Basic256Sha256_Sign,
            ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
        ]
    server.set_security_policy(policies)
    if username is not None:
        server.set_identity_tokens([ua.UserNameIdentityToken])
    idx = await server.register_namespace(NAMESPACE)
    pump = await server.nodes.objects.add_object(f"ns={idx};s=Pump1", f"{idx}:Pump1")
    writable = {
        "Pressure": (0.0, ua.VariantType.Double),
        "Running": (False, ua.VariantType.Boolean),
        "State": ("idle", ua.VariantType.String),
    }
    for name, (initial, vtype) in writable.items():
        var = await pump.add_variable(f"ns={idx};s=Pump1.{name}", f"{idx}:{name}", initial, vtype)
        await var.set_writable()
    counter = await pump.add_variable(f"ns={idx};i=1001", f"{idx}:Counter", 0.0, ua.VariantType.Double)
    flow = await pump.add_variable(f"ns={idx};s=Pump1.Flow", f"{idx}:Flow", 0.0, ua.VariantType.Double)
    async with server:
        log.info("%s on port %d (user %s)", READY_LINE, port, username or "anonymous")
        tick = 0
        while True:
            await asyncio.sleep(tick_s)
            tick += 1
            now = ua.DateTime.now(UTC)
            await counter.write_value(
                ua.DataValue(ua.Variant(float(tick), ua.VariantType.Double), SourceTimestamp=now)
            )
            wave = round(10 + 5 * math.sin(tick / 5), 3)
            await flow.write_value(ua.DataValue(ua.Variant(wave, ua.VariantType.Double), SourceTimestamp=now))


def start_opcua_server(
    workdir: Path,
    port: int | None = None,
    username: str | None = None,
    password: str | None = None,
    tick_s: float = 0.5,
    cert: Path | None = None,
    key: Path | None = None,
) -> tuple[ManagedProcess, str]:
    """Start the server on ``port`` (a free one by default); returns the process
    and its endpoint url, once the server accepts connections."""
    if port is None:
        port = free_port()
    else:
        require_port_free(port, "OPC UA server")
    argv = [
        sys.executable,
        "-m",
        "citylake_devstack.opcua_server",
        "--port",
        str(port),
        "--tick-s",
        str(tick_s),
    ]
    if username is not None:
        argv += ["--user", username, "--password", password or ""]
    if cert is not None and key is not None:
        argv += ["--cert", str(cert), "--key", str(key)]
    process = ManagedProcess(f"opcua-server:{port}", argv, workdir / f"opcua-{port}.log").start()
    # The port opens only after the address space is built.
    process.wait_port(port, 30)
    return process, f"opc.tcp://127.0.0.1:{port}/citylake"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--user", help="admit only this user (with --password)")
    parser.add_argument("--password", default="")
    parser.add_argument("--tick-s", type=float, default=0.5, help="how often Counter and Flow change")
    parser.add_argument("--cert", type=Path, help="server certificate (DER or PEM) for Basic256Sha256")
    parser.add_argument("--key", type=Path, help="its private key (PEM)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(message)s")
    # asyncua logs every request at INFO; its warnings are enough in a test log.
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    asyncio.run(serve(args.port, args.user, args.password, args.tick_s, args.cert, args.key))


if __name__ == "__main__":
    main()
