"""OPC UA adapter against a real asyncua server in its own process: exact
values, status and source timestamps land; the deadband holds back small
changes; a wrong password fails check(); a restarted server is re-subscribed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client

from citylake.config import ConfigError, load_config
from citylake.ingest.base import SourceUnavailable
from citylake.ingest.opcua.adapter import OpcUaSource
from citylake.ingest.registry import build_sources
from citylake.schemas import DataLayout
from citylake_devstack import ComponentUnavailable, free_port
from citylake_devstack.opcua_server import start_opcua_server
from citylake_devstack.process import ManagedProcess
from tests.landing_rows import landed, make_runner
from tests.waiting import wait_until

pytestmark = pytest.mark.integration
TS = 1_764_072_000_000
USER, PASSWORD = "citylake", "s3cret-pump"

ServerFactory = Callable[..., tuple[ManagedProcess, str]]


@pytest.fixture
def opcua_server(tmp_path: Path) -> Iterator[ServerFactory]:
    started: list[ManagedProcess] = []

    def start(**options: Any) -> tuple[ManagedProcess, str]:
        try:
            process, url = start_opcua_server(tmp_path / "opcua", **options)
        except ComponentUnavailable as exc:
            pytest.fail(f"could not start the OPC UA server: {exc}", pytrace=False)
        started.append(process)
        return process, url

    yield start
    for process in started:
        process.stop()


def metric_rows(layout: DataLayout, metric: str) -> list[dict[str, Any]]:
    rows = [r for r in landed(layout, "readings") if r["metric"] == metric]
    return sorted(rows, key=lambda r: (r["ts"], r["ingest_ts"]))


def ms(row: dict[str, Any]) -> int:
    return int(row["ts"].timestamp() * 1000)


def opcua_source(url: str, **extra: object) -> dict[str, object]:
    return {
        "name": "plc",
        "type": "opcua",
        "url": url,
        "username": USER,
        "password": PASSWORD,
        "sampling_interval_ms": 50,
        "publishing_interval_ms": 100,
        "watchdog_interval_s": 0.5,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "nodes": [
            {
                "node_id": "ns=2;s=Pump1.Pressure",
                "device_id": "pump-1",
                "metric": "pressure",
                "unit": "bar",
                "deadband": {"type": "absolute", "value": 0.5},
            },
            {"node_id": "ns=2;i=1001", "device_id": "pump-1", "metric": "starts"},
            {"browse_path": "0:Objects/2:Pump1/2:Running", "device_id": "pump-1", "metric": "running"},
            {"browse_path": "0:Objects/2:Pump1/2:State", "device_id": "pump-1", "metric": "state"},
        ],
        **extra,
    }


async def writer(url: str) -> Client:
    """A second OPC UA client, as an operator panel would write values."""
    client = Client(url, timeout=5)
    client.set_user(USER)
    client.set_password(PASSWORD)
    await asyncio.wait_for(client.connect(), 10)
    return client


async def write(client: Client, node_id: str, value: ua.Variant, ts_ms: int, status: int = 0) -> None:
    stamp = ua.DateTime.fromtimestamp(ts_ms / 1000, UTC)
    data = ua.DataValue(value, StatusCode=ua.StatusCode(ua.UInt32(status)), SourceTimestamp=stamp)
    await asyncio.wait_for(client.get_node(node_id).write_value(data), 5)
    # Past a publishing interval, so every write is its own notification.
    await asyncio.sleep(0.3)


def double(value: float) -> ua.Variant:
    return ua.Variant(value, ua.VariantType.Double)


async def test_subscription_lands_exact_values_and_deadband_holds_back_noise(
    opcua_server: ServerFactory, city_config: Callable[..., Path]
) -> None:
    _, url = opcua_server(username=USER, password=PASSWORD, tick_s=0.3)
    described = {"pump-1": {"name": "Pump 1", "device_type": "pump", "civil_code": "320106"}}
    runner, layout = make_runner(city_config(sources=[opcua_source(url, devices=described)]))
    await runner.start()
    source = runner.sources[0]
    try:
        await wait_until(source.is_up, 30)
        panel = await writer(url)
        try:
            await write(panel, "ns=2;s=Pump1.Pressure", double(1.0), TS)
            await write(panel, "ns=2;s=Pump1.Pressure", double(1.3), TS + 1000)  # inside the deadband
            await write(panel, "ns=2;s=Pump1.Pressure", double(2.0), TS + 2000)
            await write(panel, "ns=2;s=Pump1.Pressure", double(2.2), TS + 3000)  # inside the deadband
            uncertain = 0x40000000  # severity bits 01: Uncertain
            await write(panel, "ns=2;s=Pump1.Pressure", double(3.5), TS + 4000, uncertain)
            await write(panel, "ns=2;s=Pump1.Running", ua.Variant(True, ua.VariantType.Boolean), TS + 5000)
            await write(panel, "ns=2;s=Pump1.State", ua.Variant("running", ua.VariantType.String), TS + 5000)
        finally:
            await asyncio.wait_for(panel.disconnect(), 10)
        await wait_until(lambda: len([r for r in metric_rows(layout, "starts") if r["value"] > 0]) >= 3, 30)
        await wait_until(lambda: len(metric_rows(layout, "state")) >= 2, 30)
    finally:
        await runner.stop()

    pressure = [(ms(r), r["value"], r["quality"], r["unit"]) for r in metric_rows(layout, "pressure")]
    ours = [p for p in pressure if TS <= p[0] <= TS + 10_000]
    assert ours == [(TS, 1.0, 0, "bar"), (TS + 2000, 2.0, 0, "bar"), (TS + 4000, 3.5, 1, "bar")]
    # The subscription also reported the value it found: the server's initial 0.0.
    assert [p[1] for p in pressure if p not in ours] == [0.0]

    # Written with an older source timestamp than the initial values the server reported.
    running = {(ms(r) == TS + 5000, r["value"], r["text"]) for r in metric_rows(layout, "running")}
    assert running == {(False, 0.0, None), (True, 1.0, None)}
    state = {(ms(r) == TS + 5000, r["value"], r["text"]) for r in metric_rows(layout, "state")}
    assert state == {(False, None, "idle"), (True, None, "running")}

    # The timer node counts up by one per tick; every change arrives once, in order.
    starts = [r["value"] for r in metric_rows(layout, "starts")]
    assert starts == [float(n) for n in range(int(starts[0]), int(starts[0]) + len(starts))]
    assert {r["device_id"] for r in landed(layout, "readings")} == {"pump-1"}
    assert {r["source"] for r in landed(layout, "readings")} == {"plc"}
    assert landed(layout, "rejected") == []
    # The configured device landed once, at start, as city.yaml describes it.
    (device,) = landed(layout, "devices")
    columns = ("device_id", "name", "type", "protocol", "civil_code")
    assert tuple(device[c] for c in columns) == ("pump-1", "Pump 1", "pump", "opcua", "320106")
    assert '"metrics": ["pressure", "starts", "running", "state"]' in device["attributes"]


async def test_check_names_url_and_error(
    opcua_server: ServerFactory, city_config: Callable[..., Path]
) -> None:
    _, url = opcua_server(username=USER, password=PASSWORD)
    loaded = load_config(city_config(sources=[opcua_source(url)]))
    good = build_sources(loaded)[0]
    await good.check()

    wrong = load_config(city_config(sources=[opcua_source(url, password="not-the-password")]))
    with pytest.raises(SourceUnavailable) as info:
        await build_sources(wrong)[0].check()
    assert url in str(info.value)
    assert "BadUserAccessDenied" in str(info.value)

    anonymous = opcua_source(url)
    del anonymous["username"], anonymous["password"]
    with pytest.raises(SourceUnavailable, match=r"BadIdentityTokenRejected|BadUserAccessDenied"):
        await build_sources(load_config(city_config(sources=[anonymous])))[0].check()

    nobody = f"opc.tcp://127.0.0.1:{free_port()}/citylake"
    with pytest.raises(SourceUnavailable) as refused:
        await build_sources(load_config(city_config(sources=[opcua_source(nobody)])))[0].check()
    assert nobody in str(refused.value)


async def test_reconnects_and_resubscribes_after_server_restart(
    opcua_server: ServerFactory, city_config: Callable[..., Path]
) -> None:
    port = free_port()
    server, url = opcua_server(port=port, username=USER, password=PASSWORD, tick_s=0.2)
    runner, layout = make_runner(city_config(sources=[opcua_source(url)]))
    await runner.start()
    source = runner.sources[0]
    assert isinstance(source, OpcUaSource)
    try:
        await wait_until(source.is_up, 30)
        await wait_until(lambda: len(metric_rows(layout, "starts")) >= 3, 30)
        server.stop()
        await wait_until(lambda: not source.is_up(), 15)
        restarted_ms = int(time.time() * 1000)
        await asyncio.to_thread(opcua_server, port=port, username=USER, password=PASSWORD, tick_s=0.2)
        await wait_until(source.is_up, 30)
        # Rows stamped after the restart prove the subscription was created
        # again on the new server's session.
        await wait_until(
            lambda: len([r for r in metric_rows(layout, "starts") if ms(r) > restarted_ms]) >= 3, 30
        )
    finally:
        await runner.stop()
    assert source.connects == 2
    # Source timestamps after restarted_ms can only come from the new process:
    # the old one was dead before the adapter noticed the loss.
    after = [r["value"] for r in metric_rows(layout, "starts") if ms(r) > restarted_ms]
    assert after[:3] == [after[0], after[0] + 1, after[0] + 2]


async def test_poll_mode_reads_all_nodes_and_skips_unknown_paths(
    opcua_server: ServerFactory, city_config: Callable[..., Path]
) -> None:
    _, url = opcua_server(username=USER, password=PASSWORD, tick_s=0.3)
    config = opcua_source(url, mode="poll", interval_s=0.2)
    config["nodes"] = [
        {"browse_path": "0:Objects/2:Pump1/2:State", "device_id": "pump-1", "metric": "state"},
        {"browse_path": "0:Objects/2:Pump1/2:Nope", "device_id": "pump-1", "metric": "nope"},
        {"node_id": "ns=2;s=Pump1.Pressure", "device_id": "pump-1", "metric": "pressure"},
    ]
    runner, layout = make_runner(city_config(sources=[config]))
    await runner.start()
    source = runner.sources[0]
    assert isinstance(source, OpcUaSource)
    try:
        await wait_until(source.is_up, 30)
        panel = await writer(url)
        try:
            await write(panel, "ns=2;s=Pump1.Pressure", double(6.25), TS, 0x80000000)  # Bad
            await write(panel, "ns=2;s=Pump1.State", ua.Variant("maintenance", ua.VariantType.String), TS)
        finally:
            await asyncio.wait_for(panel.disconnect(), 10)
        await wait_until(lambda: any(r["text"] == "maintenance" for r in metric_rows(layout, "state")), 30)
        await wait_until(lambda: any(ms(r) == TS for r in metric_rows(layout, "pressure")), 30)
    finally:
        await runner.stop()
    assert source.unresolved == ["0:Objects/2:Pump1/2:Nope"]
    polled = {(ms(r), r["value"], r["quality"]) for r in metric_rows(layout, "pressure") if ms(r) == TS}
    # A Read answers a Bad value with its status and no value: quality 2, value null.
    assert polled == {(TS, None, 2)}
    # Polling repeats the unchanged value every interval: several reads of "idle".
    assert len([r for r in metric_rows(layout, "state") if r["text"] == "idle"]) >= 2


def self_signed(directory: Path, name: str, app_uri: str, usage: list[Any]) -> tuple[Path, Path]:
    """A certificate (DER) and key (PEM) made with asyncua's own helpers."""
    import socket

    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(app_uri), x509.DNSName(socket.gethostname())]
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, {"organizationName": "citylake"}, names, extended=usage
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}.pem"
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


async def test_basic256sha256_sign_and_encrypt(
    opcua_server: ServerFactory, city_config: Callable[..., Path], tmp_path: Path
) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    server_cert, server_key = self_signed(
        tmp_path / "pki", "server", "urn:freeopcua:python:server", [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    client_uri = "urn:citylake:test-client"
    client_cert, client_key = self_signed(
        tmp_path / "pki", "client", client_uri, [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    _, url = opcua_server(username=USER, password=PASSWORD, tick_s=0.2, cert=server_cert, key=server_key)
    secure = opcua_source(
        url,
        security_mode="SignAndEncrypt",
        security_policy="Basic256Sha256",
        certificate=str(client_cert),
        private_key=str(client_key),
        application_uri=client_uri,
        server_certificate=str(server_cert),
    )
    runner, layout = make_runner(city_config(sources=[secure]))
    await runner.sources[0].check()
    await runner.start()
    try:
        await wait_until(runner.sources[0].is_up, 30)
        await wait_until(lambda: len(metric_rows(layout, "starts")) >= 3, 30)
    finally:
        await runner.stop()
    starts = [r["value"] for r in metric_rows(layout, "starts")]
    assert starts == [float(n) for n in range(int(starts[0]), int(starts[0]) + len(starts))]

    # A policy the server does not offer is refused by check(), naming the server.
    unoffered = {**secure, "security_policy": "Aes256Sha256RsaPss"}
    with pytest.raises(SourceUnavailable) as info:
        await build_sources(load_config(city_config(sources=[unoffered])))[0].check()
    assert url in str(info.value)
    # Unpinned, the certificate the server presents is taken only when the
    # config says trust on first use; it is then pinned for later connections.
    unpinned = {k: v for k, v in secure.items() if k != "server_certificate"}
    with pytest.raises(ConfigError, match="needs server_certificate"):
        build_sources(load_config(city_config(sources=[unpinned])))
    tofu = build_sources(load_config(city_config(sources=[{**unpinned, "trust_on_first_use": True}])))[0]
    assert isinstance(tofu, OpcUaSource)
    await tofu.check()
    assert tofu._first_server_certificate == server_cert.read_bytes()  # the .der file
