"""The pinned Dapr SDK against the daprd runtime citylake ships (issue 18).

An application with its own daprd (app id ``city-client``) calls the query
service, which runs beside another daprd (app id ``query``), through the
SDK's ``invoke_method``: the two sidecars find each other by Dapr's
standalone name resolution (mDNS). The lake it answers from was written by
real ingest (MQTT through mosquitto) and the real ``readings`` job (batch mode
on Flink's mini-cluster). Against the same client sidecar the SDK saves state
with ETags (first-write) and publishes to a topic that the application
receives through a ``DaprApp`` subscription.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import paho.mqtt.publish as mqtt_publish
import pyarrow.parquet as pq
import pytest
import uvicorn
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError, DaprHttpError
from dapr.clients.grpc._state import Concurrency, StateOptions
from dapr.conf import settings
from dapr.ext.fastapi import DaprApp
from fastapi import FastAPI

from citylake.schemas import DataLayout, table
from citylake.services.sidecar import DaprSidecar, SidecarAddress
from citylake_devstack import Daprd, ManagedProcess, Mosquitto, free_port, start_service
from citylake_devstack.process import CITYLAKE
from tests.conftest import mqtt_source
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

DEVICE = "air-000007"
TS_MS = 1_764_072_123_456  # 2025-11-25T12:02:03.456Z
TS_ISO = "2025-11-25T12:02:03.456Z"
STORE = "citylake-state"
PUBSUB = "citylake-pubsub"
TOPIC = "sdk-check"
FIRST_WRITE = StateOptions(concurrency=Concurrency.first_write)


class SdkApp:
    """The client application: a FastAPI app whose only Dapr code is the SDK's
    (``DaprApp`` for its subscription), served by uvicorn in this process."""

    def __init__(self) -> None:
        self.app = FastAPI()
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        dapr_app = DaprApp(self.app)

        @dapr_app.subscribe(pubsub=PUBSUB, topic=TOPIC, route="/events/sdk-check")  # type: ignore[untyped-decorator]
        def received(event: dict[str, Any]) -> dict[str, str]:
            with self.lock:
                self.events.append(event)
            return {"status": "SUCCESS"}

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def ids(self) -> list[str]:
        with self.lock:
            return [str(e.get("id")) for e in self.events]


@pytest.fixture
def sdk_app() -> Iterator[SdkApp]:
    app = SdkApp()
    app.thread.start()
    wait_for(lambda: app.server.started, 30, "uvicorn serving the SDK app")
    yield app
    app.server.should_exit = True
    app.thread.join(10)


def write_lake_through_the_pipeline(config: Path, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """One reading through real ingest into landing, then the readings job in batch mode."""
    layout = DataLayout(tmp_path / "data")
    landing = layout.landing(table("readings"))
    ops_port = free_port()
    with ManagedProcess(
        "ingest",
        [*CITYLAKE, "ingest", "--config", str(config), "--metrics-port", str(ops_port)],
        tmp_path / "ingest.log",
    ).start() as ingest:
        ingest.wait_port(ops_port, 60)
        metrics = f"http://127.0.0.1:{ops_port}/metrics"
        wait_for(
            lambda: 'citylake_ingest_source_up{source="sensors"} 1.0' in httpx.get(metrics, timeout=5).text,
            60,
            "ingest's MQTT subscription",
        )
        mqtt_publish.single(
            f"city/haidian/air/{DEVICE}/telemetry",
            json.dumps({"ts": TS_MS, "pm25": 37.25, "temp": 21.5}),
            qos=1,
            hostname="127.0.0.1",
            port=mosquitto.port,
        )
        wait_for(lambda: any(landing.rglob("*.parquet")), 60, "landed readings file")
    with ManagedProcess(
        "readings-job",
        [*CITYLAKE, "pipeline", "run", "readings", "--mode", "batch", "--config", str(config)],
        tmp_path / "job.log",
    ).start() as job:
        assert job.proc is not None
        assert job.proc.wait(300) == 0, job.log_tail()
    # Committed files only: Flink names in-progress ones with a leading dot.
    lake_files = list(layout.lake(table("readings")).rglob("part-*"))
    rows = [r for f in lake_files for r in pq.read_table(f).to_pylist()]
    assert {(r["device_id"], r["metric"], r["value"]) for r in rows} == {
        (DEVICE, "pm25", 37.25),
        (DEVICE, "temp", 21.5),
    }, job.log_tail()


def test_an_app_calls_the_query_service_through_the_sdk_and_two_sidecars(
    mosquitto: Mosquitto,
    daprd_factory: Callable[[str, int, str], Daprd],
    city_config: Callable[..., Path],
    sdk_app: SdkApp,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = city_config(sources=[mqtt_source(mosquitto.url)], ingest={"flush_max_age_s": 0.2})
    write_lake_through_the_pipeline(config, mosquitto, tmp_path)

    query_port = free_port()
    query_sidecar = daprd_factory("query", query_port, mosquitto.url)
    client_sidecar = daprd_factory("city-client", sdk_app.port, mosquitto.url)
    # What `dapr run` gives an application: the SDK reads them once, at import,
    # so the test sets them on its settings object.
    monkeypatch.setattr(settings, "DAPR_HTTP_PORT", client_sidecar.http_port)
    monkeypatch.setattr(settings, "DAPR_GRPC_PORT", client_sidecar.grpc_port)
    query_env = {"DAPR_HTTP_PORT": str(query_sidecar.http_port)}
    with (
        start_service("query", config, query_port, tmp_path, env=query_env),
        DaprClient(address=f"127.0.0.1:{client_sidecar.grpc_port}") as dapr,
    ):
        answer = first_answer(dapr, f"v1/devices/{DEVICE}/latest")
        assert answer.status_code == 200, answer.text()
        assert answer.json() == {
            "device_id": DEVICE,
            "readings": [
                {"metric": "pm25", "ts": TS_ISO, "value": 37.25, "text": None, "unit": "ug/m3", "quality": 0},
                {"metric": "temp", "ts": TS_ISO, "value": 21.5, "text": None, "unit": None, "quality": 0},
            ],
        }
        one = dapr.invoke_method(
            "query",
            f"v1/devices/{DEVICE}/latest",
            http_verb="GET",
            http_querystring=(("metric", "temp"),),
        )
        assert [r["value"] for r in cast(dict[str, Any], one.json())["readings"]] == [21.5]
        with pytest.raises(DaprHttpError, match="404"):
            dapr.invoke_method("query", "v1/devices/nobody/latest", http_verb="GET")
        # The client's own app has no such route: the answer came from the
        # query service, through the query sidecar that name resolution found.
        assert query_sidecar.process.alive() and client_sidecar.process.alive()

        check_state_with_etags(dapr, client_sidecar)
        check_publish_reaches_the_dapr_app(dapr, sdk_app)


def first_answer(dapr: DaprClient, method: str) -> Any:
    """The first call through the client's sidecar, retried while mDNS has not
    yet found the query sidecar (a 500 naming the app id), for at most 30 s."""
    failures: list[str] = []
    deadline = time.monotonic() + 30
    while True:
        try:
            return dapr.invoke_method("query", method, http_verb="GET")
        except DaprHttpError as exc:
            failures.append(str(exc))
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the client's daprd never reached app id 'query' (mDNS name resolution): {failures[-1]}"
                ) from exc
            time.sleep(0.5)


def grpc_refusal(error: DaprGrpcError) -> tuple[str, str]:
    """(status name, message): the SDK keeps grpc.RpcError's untyped accessors."""
    return str(error.code().name), str(error.details())  # type: ignore[no-untyped-call]


def check_state_with_etags(dapr: DaprClient, sidecar: Daprd) -> None:
    dapr.save_state(STORE, "rules", json.dumps({"v": 1}))
    first = dapr.get_state(STORE, "rules")
    assert json.loads(first.data) == {"v": 1} and first.etag
    dapr.save_state(STORE, "rules", json.dumps({"v": 2}), etag=first.etag, options=FIRST_WRITE)
    with pytest.raises(DaprGrpcError) as stale:
        dapr.save_state(STORE, "rules", json.dumps({"v": 3}), etag=first.etag, options=FIRST_WRITE)
    status, message = grpc_refusal(stale.value)
    assert status == "ABORTED" and "etag mismatch" in message, message
    # first-write without an ETag is create-only: refused for a key that exists.
    with pytest.raises(DaprGrpcError) as exists:
        dapr.save_state(STORE, "rules", json.dumps({"v": 4}), options=FIRST_WRITE)
    assert grpc_refusal(exists.value)[0] == "ABORTED"
    dapr.save_state(STORE, "fresh", json.dumps({"v": 0}), options=FIRST_WRITE)
    missing = dapr.get_state(STORE, "never-written")
    assert missing.data == b"" and missing.etag == ""
    bulk = {i.key: (i.data, i.etag) for i in dapr.get_bulk_state(STORE, ["rules", "fresh"]).items}
    current = dapr.get_state(STORE, "rules")
    assert json.loads(current.data) == {"v": 2} and bulk["rules"] == (current.data, current.etag)

    # The services' hand-written client sees the same entries and ETags.
    async def read_by_hand() -> tuple[Any, str]:
        async with DaprSidecar(SidecarAddress(sidecar.http_port)) as by_hand:
            entry = await by_hand.get_state(STORE, "rules")
        assert entry is not None
        return entry.value, entry.etag

    assert asyncio.run(read_by_hand()) == ({"v": 2}, current.etag)


def check_publish_reaches_the_dapr_app(dapr: DaprClient, app: SdkApp) -> None:
    # Until the app's subscription is live on the broker, an event would be
    # lost: publish probes until one arrives.
    probes = iter(range(10_000))

    def probe_arrived() -> bool:
        dapr.publish_event(
            PUBSUB,
            TOPIC,
            json.dumps({"probe": True}),
            data_content_type="application/json",
            publish_metadata={"cloudevent.id": f"probe-{next(probes)}"},
        )
        time.sleep(0.5)
        return any(i.startswith("probe-") for i in app.ids())

    wait_for(probe_arrived, 60, "probe event at the DaprApp subscription")
    dapr.publish_event(
        PUBSUB,
        TOPIC,
        json.dumps({"alert_id": "a-1", "event": "opened"}),
        data_content_type="application/json",
        publish_metadata={"cloudevent.id": "a-1:opened", "cloudevent.type": "citylake.alert.opened"},
    )
    wait_for(lambda: "a-1:opened" in app.ids(), 30, "event a-1:opened at the DaprApp subscription")
    with app.lock:
        event = next(e for e in app.events if e["id"] == "a-1:opened")
    assert event["type"] == "citylake.alert.opened" and event["source"] == "city-client"
    assert event["topic"] == TOPIC and event["pubsubname"] == PUBSUB
    assert event["data"] == {"alert_id": "a-1", "event": "opened"}
