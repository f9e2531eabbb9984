"""``citylake simulate``: simulated devices for demos, tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from citylake.cli.common import console, fail

# Every command imports its simulator itself: `citylake --help` loads this
# module to list the commands, and should not pay for every protocol library.

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
    from citylake_devstack.simulators.mqtt import run_simulator

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
    from citylake.ingest.modbus.profiles import ProfileError
    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.modbus_sim import Simulation, run_simulation, write_city_config

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
def opcua(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1")] = 4840,
    user: Annotated[str | None, typer.Option(help="admit only this user (with --password)")] = None,
    password: Annotated[str, typer.Option(help="the user's password")] = "",
    tick_s: Annotated[float, typer.Option(min=0.01, help="how often Counter and Flow change")] = 0.5,
) -> None:
    """An OPC UA server (asyncua's own) with one pump under Objects: writable
    Pressure, Running and State, and a Counter and Flow that change every tick."""
    import asyncio

    from citylake_devstack.opcua_server import serve

    console.print(f"OPC UA server on opc.tcp://127.0.0.1:{port}/citylake (Ctrl-C stops)", highlight=False)
    try:
        asyncio.run(serve(port, user, password, tick_s))
    except KeyboardInterrupt:
        console.print("stopped", highlight=False)
    except OSError as exc:
        fail(f"cannot serve on port {port}: {exc}")


@app.command("http-push")
def http_push(
    url: Annotated[str, typer.Option(help="the source's push prefix")] = "http://127.0.0.1:8088/v1/push",
    token: Annotated[str, typer.Option(help="a bearer token the source accepts")] = "",
    devices: Annotated[int, typer.Option(min=1, help="number of simulated devices")] = 10,
    rate: Annotated[float, typer.Option(min=0.0, help="requests per device per second")] = 1.0,
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 10.0,
) -> None:
    """Devices posting JSON readings to an http_push source, one request per
    device per tick; counts what was answered 200 (durable in landing)."""
    from citylake_devstack.simulators.http_push import run_push_simulator

    if len(token) < 16:
        fail("--token must be one of the source's tokens (at least 16 characters)", code=2)
    result = run_push_simulator(url, token, devices, rate, duration)
    refused = ", ".join(f"{status}: {n}" for status, n in sorted(result.refused.items())) or "none"
    console.print(
        f"{result.requests} requests, {result.accepted} readings accepted, refused {refused}, "
        f"{result.errors} transport errors",
        highlight=False,
    )
    if result.errors or result.refused:
        raise typer.Exit(1)


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

    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.sipp import Sipp, sim_devices

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
def hj212(
    url: Annotated[str, typer.Option(help="the platform's HJ 212 server, tcp://host:port")] = (
        "tcp://127.0.0.1:6000"
    ),
    stations: Annotated[int, typer.Option(min=1, help="number of simulated stations")] = 10,
    packets: Annotated[int, typer.Option(min=1, help="real-time uploads per station")] = 10,
    interval: Annotated[float, typer.Option(min=0.0, help="seconds between a station's uploads")] = 1.0,
    password: Annotated[str, typer.Option(help="PW the stations send")] = "123456",
) -> None:
    """HJ 212-2017 stations uploading real-time data (CN 2011) and counting 9014 answers."""
    import asyncio
    from urllib.parse import urlsplit

    from citylake_devstack.simulators.hj212 import run_stations

    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        fail(f"expected tcp://host:port, got {url!r}", code=2)
    try:
        results = asyncio.run(run_stations(parts.hostname, parts.port, stations, packets, interval, password))
    except (OSError, TimeoutError) as exc:
        fail(f"HJ 212 server {url}: {exc!r}; is `citylake ingest` running with a type: hj212 source?")
    sent, acked = sum(r.sent for r in results), sum(r.acked for r in results)
    console.print(f"{stations} stations sent {sent} packets to {url}; {acked} answered (9014) after landing")
    if acked < sent:
        fail(f"{sent - acked} packets got no 9014 answer")


@app.command()
def jt808(
    url: Annotated[str, typer.Option(help="the platform's JT/T 808 server, tcp://host:port")] = (
        "tcp://127.0.0.1:7611"
    ),
    terminals: Annotated[int, typer.Option(min=1, help="number of simulated vehicle terminals")] = 10,
    locations: Annotated[int, typer.Option(min=1, help="location reports per terminal")] = 10,
    interval: Annotated[float, typer.Option(min=0.0, help="seconds between a terminal's reports")] = 1.0,
    version: Annotated[str, typer.Option(help="header version: 2019 or 2013")] = "2019",
) -> None:
    """JT/T 808 terminals: register, authenticate, heartbeat, report locations, count 0x8001 answers."""
    import asyncio
    from urllib.parse import urlsplit

    from citylake_devstack.simulators.jt808 import run_terminals

    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or not parts.port:
        fail(f"expected tcp://host:port, got {url!r}", code=2)
    if version not in ("2019", "2013"):
        fail(f"--version is 2019 or 2013, not {version!r}", code=2)
    header_version = 1 if version == "2019" else None
    try:
        results = asyncio.run(
            run_terminals(parts.hostname, parts.port, terminals, locations, interval, header_version)
        )
    except (OSError, TimeoutError) as exc:
        fail(f"JT/T 808 server {url}: {exc!r}; is `citylake ingest` running with a type: jt808 source?")
    sent, acked = sum(r.sent for r in results), sum(r.acked for r in results)
    console.print(
        f"{terminals} terminals sent {sent} locations to {url}; {acked} answered (0x8001) after landing"
    )
    if acked < sent:
        fail(f"{sent - acked} locations got no 0x8001 answer")


@app.command()
def nmea(
    host: Annotated[str, typer.Option(help="address the talker listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (10110 is NMEA-over-TCP's)")] = 10110,
    rate: Annotated[float, typer.Option(min=0.01, help="fix epochs per second")] = 1.0,
    epochs: Annotated[int, typer.Option(min=0, help="epochs per client, then close; 0: forever")] = 0,
    hostile: Annotated[
        bool, typer.Option(help="add a bad checksum, garbage and an overlong line per epoch")
    ] = False,
) -> None:
    """An NMEA 0183 talker on TCP: GGA, RMC, VTG, GSA (and GSV) of a moving boat, rendered by pynmea2."""
    import asyncio
    import contextlib

    from citylake_devstack.simulators.nmea import serve_talker

    console.print(f"NMEA talker on tcp://{host}:{port}, {rate:g} epochs/s", highlight=False)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_talker(host, port, rate, epochs or None, hostile))
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc}")


@app.command()
def websocket(
    url: Annotated[str, typer.Option(help="the platform's WebSocket source, ws://host:port")] = (
        "ws://127.0.0.1:8765"
    ),
    token: Annotated[str, typer.Option(help="bearer token of the source")] = "",
    gateways: Annotated[int, typer.Option(min=1, help="number of simulated gateways")] = 5,
    messages: Annotated[int, typer.Option(min=1, help="messages per gateway")] = 10,
    batch: Annotated[int, typer.Option(min=1, help="readings per message")] = 1,
    interval: Annotated[float, typer.Option(min=0.0, help="seconds between a gateway's messages")] = 1.0,
) -> None:
    """Gateways pushing JSON readings over WebSocket, counting the acks sent after landing."""
    import asyncio

    from websockets.exceptions import InvalidStatus

    from citylake_devstack.simulators.websocket import run_gateways

    if not token:
        fail("give --token: one of the source's `tokens`", code=2)
    try:
        results = asyncio.run(run_gateways(url, token, gateways, messages, batch, interval))
    except InvalidStatus as exc:
        fail(f"{url} refused the handshake: {exc}")
    except OSError as exc:
        fail(f"{url}: {exc!r}; is `citylake ingest` running with a type: websocket source?")
    sent, accepted = sum(r.sent for r in results), sum(r.accepted for r in results)
    console.print(f"{gateways} gateways sent {sent} messages to {url}; {accepted} readings acknowledged")


@app.command()
def dlt645(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1 (the serial server)")
    ] = 8899,
    serial: Annotated[
        str | None, typer.Option(help="also answer on this pty, e.g. one end of a socat pty pair")
    ] = None,
    meters: Annotated[int, typer.Option(min=1, max=9999, help="meters 000000000001.. on the line")] = 10,
    wobble: Annotated[bool, typer.Option(help="let voltages, currents and energy change over time")] = True,
) -> None:
    """Simulated DL/T 645-2007 meters behind a transparent serial server (until Ctrl-C)."""
    import asyncio

    from citylake.ingest.dlt645.codec import find_frame
    from citylake_devstack.simulators.dlt645 import Dlt645Meters, demo_meters
    from citylake_devstack.simulators.line import RequestLog, serve_line

    sim = Dlt645Meters(demo_meters(meters), set(), wobble)
    console.print(
        f"{meters} DL/T 645 meters on tcp://127.0.0.1:{port}" + (f" and {serial}" if serial else "")
    )
    try:
        asyncio.run(serve_line(find_frame, sim.respond, port, serial, RequestLog(None)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on port {port} or {serial}: {exc}")


@app.command()
def cjt188(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1 (the serial server)")
    ] = 8900,
    serial: Annotated[
        str | None, typer.Option(help="also answer on this pty, e.g. one end of a socat pty pair")
    ] = None,
    meters: Annotated[
        int, typer.Option(min=1, max=9999, help="meters 00000000000001..; every 4th heat")
    ] = 10,
) -> None:
    """Simulated CJ/T 188 water, heat and gas meters behind a serial server (until Ctrl-C)."""
    import asyncio

    from citylake.ingest.cjt188.codec import find_frame
    from citylake_devstack.simulators.cjt188 import Cjt188Meters, demo_meters
    from citylake_devstack.simulators.line import RequestLog, serve_line

    sim = Cjt188Meters(demo_meters(meters))
    console.print(
        f"{meters} CJ/T 188 meters on tcp://127.0.0.1:{port}" + (f" and {serial}" if serial else "")
    )
    try:
        asyncio.run(serve_line(find_frame, sim.respond, port, serial, RequestLog(None)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on port {port} or {serial}: {exc}")


@app.command()
def mbus(
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="TCP port on 127.0.0.1 (the M-Bus gateway)")
    ] = 9001,
    serial: Annotated[
        str | None, typer.Option(help="also answer on this pty, e.g. one end of a socat pty pair")
    ] = None,
    meters: Annotated[int, typer.Option(min=1, max=250, help="heat meters at primary addresses 1..N")] = 10,
) -> None:
    """Simulated M-Bus heat meters behind a TCP M-Bus gateway (until Ctrl-C)."""
    import asyncio

    from citylake_devstack.simulators.line import RequestLog, serve_line
    from citylake_devstack.simulators.mbus import MbusMeters, demo_meters, request_span

    sim = MbusMeters(demo_meters(meters))
    console.print(f"{meters} M-Bus meters on tcp://127.0.0.1:{port}" + (f" and {serial}" if serial else ""))
    try:
        asyncio.run(serve_line(request_span, sim.respond, port, serial, RequestLog(None)))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on port {port} or {serial}: {exc}")


@app.command()
def lorawan(
    url: Annotated[
        str, typer.Option(help="the broker ChirpStack would publish to")
    ] = "mqtt://127.0.0.1:1883",
    devices: Annotated[int, typer.Option(min=1, max=100_000, help="LoRaWAN devices (devEui a840...)")] = 10,
    uplinks: Annotated[int, typer.Option(min=1, help="uplinks per device")] = 10,
) -> None:
    """ChirpStack v4 integration events (join, up, status) for simulated sensors, on MQTT with QoS 1."""
    import time

    from citylake_devstack.simulators.lorawan import city_sensors, publish

    try:
        sent = publish(url, city_sensors(devices, uplinks, int(time.time() * 1000)))
    except OSError as exc:
        fail(f"cannot publish to {url}: {exc}")
    console.print(f"published {sent} ChirpStack events for {devices} devices to {url}")


@app.command()
def bacnet(
    port: Annotated[int, typer.Option(min=1, max=65535, help="UDP port (BACnet/IP's own is 47808)")] = 47808,
    host: Annotated[str, typer.Option(help="IPv4 address to bind")] = "127.0.0.1",
    instance: Annotated[int, typer.Option(min=0, max=4_194_302, help="the device object's instance")] = 1001,
    tick: Annotated[
        float, typer.Option(min=0.0, help="seconds between supply-air-temp changes; 0 = fixed")
    ] = 1.0,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="seconds to run; default until Ctrl-C")
    ] = None,
) -> None:
    """A simulated BACnet/IP air-handling unit (bacpypes3's own device): answers
    Who-Is, ReadPropertyMultiple, WriteProperty and SubscribeCOV."""
    import asyncio
    import contextlib

    from citylake_devstack.simulators.bacnet import serve

    console.print(f"BACnet device {instance} on udp://{host}:{port}", highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(asyncio.wait_for(serve(port, instance, tick, host), duration))
        except TimeoutError:  # --duration is over (TimeoutError is an OSError: test it first)
            pass
        except OSError as exc:
            fail(f"cannot bind udp://{host}:{port}: {exc}; choose another --port or --host")


@app.command()
def iec104(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (IEC 104's own is 2404)")] = 2404,
    host: Annotated[str, typer.Option(help="IPv4 address to listen on")] = "127.0.0.1",
    common_address: Annotated[int, typer.Option(min=1, max=65534, help="the station's common address")] = 47,
    extra_ioas: Annotated[
        int, typer.Option(min=0, help="points at IOA 50001.. that clients do not know")
    ] = 0,
    tick: Annotated[
        float, typer.Option(min=0.0, help="after the scenario: bus voltage every tick; 0 = off")
    ] = 1.0,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="seconds to run; default until Ctrl-C")
    ] = None,
) -> None:
    """A simulated IEC 60870-5-104 RTU (c104's own server): answers general
    interrogation and sends a scenario of spontaneous measurands with quality
    descriptors and a time tag once a client connects."""
    import contextlib

    from citylake_devstack.simulators.iec104 import serve

    console.print(f"IEC 104 RTU, CA {common_address}, on tcp://{host}:{port}", highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            serve(port, common_address, host, extra_ioas, tick_s=tick, duration_s=duration)
        except (OSError, ValueError, RuntimeError) as exc:
            fail(f"cannot serve on tcp://{host}:{port}: {exc}; choose another --port or --host")


@app.command()
def s7(
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port (ISO-on-TCP's own is 102)")] = 1102,
    host: Annotated[str, typer.Option(help="IPv4 address to listen on")] = "127.0.0.1",
    tick: Annotated[float, typer.Option(min=0.0, help="seconds between pressure changes; 0 = fixed")] = 1.0,
    duration: Annotated[
        float | None, typer.Option(min=0.0, help="seconds to run; default until Ctrl-C")
    ] = None,
) -> None:
    """A simulated Siemens S7 PLC (python-snap7's own server): DB1 and merkers of a pump station."""
    import contextlib

    from citylake_devstack.simulators.s7 import serve

    console.print(f"S7 PLC (DB1, merkers) on tcp://{host}:{port}", highlight=False)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            serve(port, tick, duration, host)
        except (OSError, RuntimeError) as exc:
            fail(f"cannot serve on port {port}: {exc}; choose another --port")


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
    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.simulators.snmp import run_snmp_simulator

    try:
        result = run_snmp_simulator(
            workdir.resolve(), duration, traps_to, trap_every, community,
            on_start=lambda sim: console.print(sim.describe()),
        )  # fmt: skip
    except ComponentUnavailable as exc:
        fail(str(exc))
    sent = ", ".join(f"{n} {name}" for name, n in result.traps_sent.items()) or "no traps"
    console.print(f"agent stopped; sent {sent}")


@app.command("snmp-trap")
def snmp_trap(
    to: Annotated[str, typer.Option(help="the snmp_trap source, e.g. udp://127.0.0.1:10162")] = (
        "udp://127.0.0.1:10162"
    ),
    duration: Annotated[float, typer.Option(min=0.0, help="seconds to run")] = 60.0,
    every: Annotated[float, typer.Option(min=0.01, help="seconds between traps")] = 1.0,
    community: Annotated[str, typer.Option(help="community of the v2c traps")] = "citylake-ro",
    workdir: Annotated[Path, typer.Option(help="snmpd's config, log and persistent files")] = Path(
        "var/simulate/snmpd"
    ),
) -> None:
    """The UPS agent of `simulate snmp`, sending its traps (linkDown/linkUp,
    coldStart, on battery) to an snmp_trap source."""
    snmp(duration=duration, workdir=workdir, traps_to=to, trap_every=every, community=community)


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
    from citylake_devstack import ComponentUnavailable
    from citylake_devstack.simulators.coap import run_coap_simulator

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
    from citylake_devstack.simulators.bus import run_amqp_simulator

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
    from citylake_devstack.simulators.bus import run_kafka_simulator

    try:
        result = run_kafka_simulator(bootstrap, topic, devices, rate, duration)
    except RuntimeError as exc:
        fail(str(exc))
    console.print(f"produced {result.messages} messages, {result.readings} readings to {topic}")
