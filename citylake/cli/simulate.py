"""``citylake simulate``: simulated devices for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from citylake.cli.common import console, fail
from citylake.devstack import ComponentUnavailable

app = typer.Typer(help="Simulated devices speaking real protocols.", no_args_is_help=True)


@app.command()
def mqtt(
    url: Annotated[str, typer.Option(help="broker, e.g. mqtt://127.0.0.1:1883")] = "mqtt://127.0.0.1:1883",
    devices: Annotated[int, typer.Option(min=1, help="number of simulated sensors")] = 10,
    rate: Annotated[float, typer.Option(min=0.0, help="messages per device per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 10.0,
    qos: Annotated[int, typer.Option(min=0, max=1)] = 1,
    manifest: Annotated[
        Path | None, typer.Option(help="write what the broker acknowledged (counts, sums, every key) here")
    ] = None,
) -> None:
    """Publish JSON telemetry on city/{district}/{type}/{device_id}/telemetry."""
    from citylake.ingest.mqtt.simulator import run_simulator

    result = run_simulator(url, devices, rate, duration, qos=qos, record_keys=manifest is not None)
    if manifest is not None:
        result.write(manifest)
    console.print(f"sent {result.messages} messages, {result.readings} readings to {url}")


@app.command()
def modbus(
    devices: Annotated[int, typer.Option(min=1, help="number of simulated slave devices")] = 10,
    per_endpoint: Annotated[
        int, typer.Option(min=1, max=247, help="slave ids per TCP server (a gateway): devices / K servers")
    ] = 50,
    base_port: Annotated[
        int, typer.Option(min=0, max=65535, help="server e listens on base+e on 127.0.0.1; 0 = free ports")
    ] = 0,
    profile: Annotated[str, typer.Option(help="register map: ingest/profiles/<name>.yaml or a path")] = (
        "pump-station"
    ),
    change_every: Annotated[
        float, typer.Option(min=0.0, help="seconds between value changes (on the wall clock); 0 = fixed")
    ] = 1.0,
    processes: Annotated[
        int, typer.Option(min=1, help="server processes; each serves its endpoints on one event loop")
    ] = 1,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="seconds to run; default until Ctrl-C")
    ] = None,
    write_config: Annotated[
        Path | None, typer.Option(help="write a city.yaml listing every device, for citylake ingest --config")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.001, help="poll interval written into the config")] = 1.0,
    site: Annotated[str, typer.Option(help="site written into the config")] = "sim-site",
    data_dir: Annotated[str, typer.Option(help="data_dir written into the config")] = "./var",
) -> None:
    """Simulated Modbus devices (pump stations, meters): pymodbus TCP servers on 127.0.0.1."""
    from citylake.devstack.modbus_sim import Simulation, run_simulation, write_city_config
    from citylake.ingest.modbus.profiles import ProfileError

    endpoints = -(-devices // per_endpoint)
    if base_port and base_port + endpoints - 1 > 65535:
        fail(f"--base-port {base_port} + {endpoints} endpoints goes beyond port 65535", code=2)

    def ready(simulation: Simulation) -> None:
        first, last = simulation.urls[0], simulation.urls[-1]
        where = first if len(simulation.urls) == 1 else f"{first} .. {last}"
        console.print(
            f"serving {len(simulation.devices)} {simulation.profile} devices, {per_endpoint} per endpoint, "
            f"on {len(simulation.urls)} endpoints ({where}) in {simulation.processes} process(es)",
            highlight=False,
            soft_wrap=True,
        )
        if write_config is not None:
            write_city_config(write_config, simulation, site=site, data_dir=data_dir, interval_s=interval)
            console.print(
                f"wrote {write_config}: citylake ingest --config {write_config}",
                highlight=False,
                soft_wrap=True,
            )
        console.print("Ctrl-C stops" if duration is None else f"running for {duration:g}s", highlight=False)

    try:
        run_simulation(
            devices, per_endpoint, base_port, profile, change_every, processes, duration, on_ready=ready
        )
    except ProfileError as exc:
        fail(str(exc), code=2)
    except ComponentUnavailable as exc:
        fail(str(exc))
    console.print("stopped", highlight=False)


@app.command()
def gb28181(
    url: Annotated[str, typer.Option(help="the platform: udp://host:port or tcp://host:port")] = (
        "udp://127.0.0.1:5060"
    ),
    platform_id: Annotated[str, typer.Option(help="the platform's 20-digit id")] = "34020000002000000001",
    domain: Annotated[
        str, typer.Option(help="SIP domain, 10 digits; device ids are made in it")
    ] = "3402000000",
    password: Annotated[str, typer.Option(help="REGISTER password")] = "12345678",
    devices: Annotated[
        int, typer.Option(min=1, max=100_000, help="number of simulated NVRs (3 cameras each)")
    ] = 10,
    transport: Annotated[str | None, typer.Option(help="udp or tcp; default the url's scheme")] = None,
    scenario: Annotated[
        str, typer.Option(help="ingest/gb28181/scenarios/<name>.xml: device, device_gb2312, keepalive, ...")
    ] = "device",
    rate: Annotated[float, typer.Option(min=0.001, help="devices started per second")] = 10.0,
    keepalive_ms: Annotated[
        int, typer.Option(min=0, help="pause between keepalives (keepalive scenario)")
    ] = 1000,
    expires: Annotated[int, typer.Option(min=1, help="Expires of the keepalive scenario's REGISTER")] = 3600,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for SIPp")] = 600.0,
    workdir: Annotated[Path, typer.Option(help="SIPp's injection file, statistics and logs go here")] = Path(
        "var/sipp"
    ),
) -> None:
    """Simulated GB28181 NVRs and cameras: SIPp plays a scenario per device
    (register with digest auth, answer catalog/device-info queries, keepalive,
    alarm, position, unregister)."""
    from urllib.parse import urlsplit

    from citylake.devstack.sipp import Sipp, sim_devices

    parts = urlsplit(url)
    chosen = transport or ("tcp" if parts.scheme == "tcp" else "udp")
    if chosen not in ("udp", "tcp"):
        fail(f"--transport must be udp or tcp, got {chosen!r}", code=2)
    if not parts.hostname or not parts.port:
        fail(f"--url must be udp://host:port or tcp://host:port, got {url!r}", code=2)
    try:
        simulated = sim_devices(devices, domain)
        sipp = Sipp(
            workdir,
            f"{parts.hostname}:{parts.port}",
            scenario,
            simulated,
            {"platform_id": platform_id, "domain": domain, "expires": str(expires)},
            password,
            chosen,
            rate=rate,
            pause_ms=keepalive_ms,
        )
    except ValueError as exc:
        fail(str(exc), code=2)
    except ComponentUnavailable as exc:
        fail(str(exc))
    console.print(
        f"SIPp plays {scenario} for {devices} devices over {chosen} against {url} (logs in {workdir})",
        highlight=False,
        soft_wrap=True,
    )
    try:
        result = sipp.start().wait(timeout)
    except ComponentUnavailable as exc:
        fail(str(exc))
    console.print(
        f"{devices} devices: {result.successful} successful, {result.failed} failed "
        f"(SIPp exit {result.exit_code}: {result.meaning})",
        highlight=False,
        soft_wrap=True,
    )
    if not result.ok:
        fail(f"some devices failed; SIPp log {sipp.process.log_path}:\n{result.log_tail[-2000:]}")


@app.command()
def snmp(
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 60.0,
    workdir: Annotated[Path, typer.Option(help="snmpd's config, log and persistent files")] = Path(
        "var/simulate/snmpd"
    ),
    traps_to: Annotated[
        str | None, typer.Option(help="send traps to this receiver, e.g. udp://127.0.0.1:10162")
    ] = None,
    trap_every: Annotated[float, typer.Option(min=0.01, help="seconds between traps")] = 1.0,
    community: Annotated[str, typer.Option(help="community of the v2c traps")] = "citylake-ro",
) -> None:
    """A UPS agent (Debian snmpd, UPS-MIB objects, v2c and v3) and its traps."""
    from citylake.devstack.simulators.snmp import run_snmp_simulator

    try:
        result = run_snmp_simulator(
            workdir.resolve(), duration, traps_to, trap_every, community,
            on_start=lambda sim: console.print(sim.describe()),
        )  # fmt: skip
    except ComponentUnavailable as exc:
        fail(str(exc))
    sent = ", ".join(f"{n} {name}" for name, n in result.traps_sent.items()) or "no traps"
    console.print(f"agent stopped; sent {sent}")


@app.command()
def coap(
    devices: Annotated[int, typer.Option(min=1, help="simulated NB-IoT air-quality sensors")] = 5,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 60.0,
    every: Annotated[float, typer.Option(min=0.01, help="seconds between updates of each sensor")] = 1.0,
    push_to: Annotated[
        str | None,
        typer.Option(help="POST to this CoAP server path instead, e.g. coap://127.0.0.1:5683/telemetry"),
    ] = None,
    workdir: Annotated[Path, typer.Option(help="coap-server's log")] = Path("var/simulate/coap"),
) -> None:
    """Observable SenML resources on Debian's coap-server (or pushes to a server)."""
    from citylake.devstack.simulators.coap import run_coap_simulator

    def started(sim: object) -> None:
        server = getattr(sim, "server", None)
        where = f"{server.url}/air/<n>" if server is not None else push_to
        console.print(f"{devices} sensors at {where} (SenML JSON, Content-Format 110)")

    try:
        result = run_coap_simulator(workdir.resolve(), devices, duration, every, push_to, on_start=started)
    except ComponentUnavailable as exc:
        fail(str(exc))
    console.print(f"{result.updates} updates sent, {result.failures} failed")


@app.command()
def amqp(
    url: Annotated[str, typer.Option(help="broker, amqp://user:password@host:5672/vhost")],
    exchange: Annotated[str, typer.Option(help="topic exchange (declared durable if missing)")] = "city",
    devices: Annotated[int, typer.Option(min=1, help="simulated wells")] = 10,
    rate: Annotated[float, typer.Option(min=0.0, help="messages per device per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 10.0,
) -> None:
    """Publish JSON telemetry to an AMQP topic exchange (city.<district>.<type>.<id>.telemetry)."""
    from citylake.devstack.simulators.bus import run_amqp_simulator

    try:
        result = run_amqp_simulator(url, exchange, devices, rate, duration)
    except OSError as exc:
        fail(f"AMQP broker: {exc}")
    console.print(f"published {result.messages} messages, {result.readings} readings to {exchange}")


@app.command()
def kafka(
    bootstrap: Annotated[str, typer.Option(help="brokers, host:port[,host:port]")] = "127.0.0.1:9092",
    topic: Annotated[str, typer.Option(help="topic to produce to")] = "city.telemetry",
    devices: Annotated[int, typer.Option(min=1, help="simulated buses (the message key)")] = 10,
    rate: Annotated[float, typer.Option(min=0.0, help="messages per device per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 10.0,
) -> None:
    """Produce JSON telemetry to a Kafka topic, keyed by device id."""
    from citylake.devstack.simulators.bus import run_kafka_simulator

    try:
        result = run_kafka_simulator(bootstrap, topic, devices, rate, duration)
    except RuntimeError as exc:
        fail(str(exc))
    console.print(f"produced {result.messages} messages, {result.readings} readings to {topic}")
