"""The alerts service without a sidecar: rules in the embedded store, alerts
from a real (small) lake, events to the in-memory publisher."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from ruamel.yaml import YAML

from citylake.config import AlertRule, PipelinesConfig
from citylake.services.alerts.app import AlertsSettings, create_app
from citylake.services.alerts.events import AlertAnnouncer
from citylake.services.alerts.rules import RULES_KEY, RuleBook
from citylake.services.publish import EmbeddedPublisher
from citylake.services.sidecar import SidecarAddress
from citylake.services.state import EmbeddedStateStore
from citylake_devstack import free_port
from tests.lakedata import T0, alert, write_lake_table

T = TypeVar("T")
HOT = {"name": "hot", "metric": "temp", "above": 30, "severity": "critical"}


def settings(tmp_path: Path, **overrides: Any) -> AlertsSettings:
    return AlertsSettings(data_dir=tmp_path / "data", poll_interval_s=None, **overrides)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path))) as client:
        yield client


def call(http: TestClient, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``fn(*args)`` on the app's event loop, as the app's own tasks run."""
    assert http.portal is not None, "use the client in a with block"
    return http.portal.call(fn, *args)


def etag(response: Any) -> str:
    return str(response.headers["etag"])


# --- rules -------------------------------------------------------------------


def test_rules_create_read_replace_delete(http: TestClient) -> None:
    created = http.post("/v1/rules", json=HOT)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/v1/rules/hot"
    assert created.json()["above"] == 30.0 and created.json()["kind"] == "threshold"
    assert etag(created) == f'"{created.json()["etag"]}"'

    listed = http.get("/v1/rules").json()
    assert [r["name"] for r in listed["rules"]] == ["hot"]
    assert "pipelines.alerts_from" in listed["note"]

    read = http.get("/v1/rules/hot")
    assert read.status_code == 200 and etag(read) == etag(created)

    replaced = http.put("/v1/rules/hot", json={**HOT, "above": 35}, headers={"If-Match": etag(read)})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["above"] == 35.0 and etag(replaced) != etag(read)

    made = http.put("/v1/rules/cold", json={"name": "cold", "metric": "temp", "below": -10})
    assert made.status_code == 201

    assert http.delete("/v1/rules/hot", headers={"If-Match": etag(replaced)}).status_code == 204
    assert http.get("/v1/rules/hot").status_code == 404
    assert http.delete("/v1/rules/hot").status_code == 404
    assert [r["name"] for r in http.get("/v1/rules").json()["rules"]] == ["cold"]


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"name": "x", "metric": "temp"}, "body: rule 'x' needs `above`, `below` or both"),
        (
            {"name": "x", "metric": "temp", "above": 1, "below": 5},
            "`below` (5.0) must be less than `above` (1.0)",
        ),
        ({"name": "Bad Name", "metric": "temp", "above": 1}, "body.name: String should match pattern"),
        ({"name": "x", "metric": "", "above": 1}, "body.metric: String should have at least 1 character"),
        ({"name": "x", "metric": "temp", "above": "hot"}, "body.above: Input should be a valid number"),
        (
            {"name": "x", "metric": "temp", "above": 1, "kind": "median"},
            "body.kind: Input should be 'threshold'",
        ),
        ({"name": "x", "metric": "temp", "above": 1, "severity": "panic"}, "body.severity: Input should be"),
        (
            {"name": "x", "metric": "temp", "above": 1, "colour": "red"},
            "body.colour: Extra inputs are not permitted",
        ),
        ({"metric": "temp", "above": 1}, "body.name: Field required"),
        ({"name": "export", "metric": "temp", "above": 1}, "'export' is reserved"),
    ],
)
def test_invalid_rules_are_422_saying_why(http: TestClient, rule: dict[str, Any], says: str) -> None:
    for response in (
        http.post("/v1/rules", json=rule),
        http.put(f"/v1/rules/{rule.get('name', 'x')}", json=rule),
    ):
        if response.status_code == 422 and "path" in response.text:
            continue  # a name that cannot be a path is refused before the body is read
        assert response.status_code == 422, response.text
        assert says in response.json()["detail"]
    assert http.get("/v1/rules").json()["rules"] == []


def test_rule_body_that_is_not_json_is_422(http: TestClient) -> None:
    response = http.post("/v1/rules", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]


def test_names_are_unique(http: TestClient) -> None:
    assert http.post("/v1/rules", json=HOT).status_code == 201
    again = http.post("/v1/rules", json={**HOT, "above": 99})
    assert again.status_code == 409
    assert "an alert rule named 'hot' exists" in again.json()["detail"]
    assert http.get("/v1/rules/hot").json()["above"] == 30.0
    renamed = http.put("/v1/rules/hot", json={**HOT, "name": "warm"})
    assert renamed.status_code == 422 and "differs from the name in the path" in renamed.json()["detail"]


def test_etag_conflicts_are_412(http: TestClient) -> None:
    first = http.post("/v1/rules", json=HOT)
    mine, theirs = etag(first), etag(first)
    won = http.put("/v1/rules/hot", json={**HOT, "above": 31}, headers={"If-Match": theirs})
    assert won.status_code == 200
    lost = http.put("/v1/rules/hot", json={**HOT, "above": 32}, headers={"If-Match": mine})
    assert lost.status_code == 412
    assert "changed since you read it" in lost.json()["detail"]
    assert http.get("/v1/rules/hot").json()["above"] == 31.0
    assert http.delete("/v1/rules/hot", headers={"If-Match": mine}).status_code == 412
    # Weak and lists of tags are understood; * means "whatever it is now".
    assert (
        http.put("/v1/rules/hot", json=HOT, headers={"If-Match": f'"nope", W/{etag(won)}'}).status_code == 200
    )
    assert http.put("/v1/rules/hot", json=HOT, headers={"If-Match": "*"}).status_code == 200
    absent = http.put("/v1/rules/nobody", json={**HOT, "name": "nobody"}, headers={"If-Match": "*"})
    assert absent.status_code == 412 and "does not exist" in absent.json()["detail"]
    exists = http.put("/v1/rules/hot", json=HOT, headers={"If-None-Match": "*"})
    assert exists.status_code == 412
    fresh = http.put("/v1/rules/new", json={**HOT, "name": "new"}, headers={"If-None-Match": "*"})
    assert fresh.status_code == 201


@pytest.mark.parametrize("hostile", ["'; DROP TABLE state; --", "..%2F..%2Fetc", "x" * 64, "ЖЖ", "a b"])
def test_hostile_rule_names_in_paths_are_refused(http: TestClient, hostile: str) -> None:
    assert http.get(f"/v1/rules/{hostile}").status_code in (404, 422)
    assert http.delete(f"/v1/rules/{hostile}").status_code in (404, 422)


class CompetingStore(EmbeddedStateStore):
    """Before this writer's first save, another writer saves the rules."""

    def __init__(self, competitor: RuleBook | None = None) -> None:
        super().__init__()
        self.competitor = competitor

    async def save(self, key: str, value: Any, **options: Any) -> None:
        competitor, self.competitor = self.competitor, None
        if competitor is not None:
            await competitor.create(AlertRule(name="theirs", metric="temp", above=1))
        await super().save(key, value, **options)


async def test_a_writer_that_loses_the_race_reapplies_its_change() -> None:
    store = CompetingStore()
    store.competitor = RuleBook(store)
    mine = RuleBook(store)
    await mine.create(AlertRule(name="mine", metric="temp", above=2))
    assert [r.rule.name for r in await mine.all()] == ["mine", "theirs"]


async def test_concurrent_writers_lose_nothing() -> None:
    store = EmbeddedStateStore()
    books = [RuleBook(store), RuleBook(store)]
    await asyncio.gather(
        *(books[i % 2].create(AlertRule(name=f"r{i}", metric="temp", above=i)) for i in range(16))
    )
    assert sorted(r.rule.name for r in await books[0].all()) == sorted(f"r{i}" for i in range(16))


async def test_concurrent_creates_of_one_name_make_one_rule() -> None:
    store = EmbeddedStateStore()
    results = await asyncio.gather(
        *(RuleBook(store).create(AlertRule(name="same", metric="temp", above=i)) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert len(await RuleBook(store).all()) == 1


def test_city_yaml_rules_are_shown_until_the_first_change(tmp_path: Path) -> None:
    seed = (AlertRule(name="pm25-high", metric="pm25", above=75), AlertRule(name="cold", metric="t", below=0))
    with TestClient(create_app(settings(tmp_path, seed_rules=seed))) as http:
        first, second = http.get("/v1/rules/pm25-high"), http.get("/v1/rules/pm25-high")
        assert etag(first) == etag(second)  # stable before anything is stored
        assert http.put("/v1/rules/pm25-high", json={"name": "pm25-high", "metric": "pm25", "above": 80},
                        headers={"If-Match": etag(first)}).status_code == 200  # fmt: skip
        assert http.delete("/v1/rules/cold").status_code == 204
        assert [r["name"] for r in http.get("/v1/rules").json()["rules"]] == ["pm25-high"]


def test_rules_survive_a_restart_in_the_embedded_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "alerts.sqlite"
    with TestClient(create_app(settings(tmp_path, embedded_state_path=path))) as http:
        tag = etag(http.post("/v1/rules", json=HOT))
    with TestClient(create_app(settings(tmp_path, embedded_state_path=path))) as http:
        again = http.get("/v1/rules/hot")
        assert again.status_code == 200 and etag(again) == tag


def test_export_is_a_pipelines_alerts_fragment_that_loads_back(http: TestClient) -> None:
    hostile = 'line one\nline "two": #not a comment\n  - [x] {y} & *z ! % @ `'
    rules = [
        {**HOT, "message": hostile, "device_prefix": "air-"},
        {"name": "fast-rise", "metric": "level", "kind": "rate", "above": 0.5, "message": "水位上涨"},
    ]
    for rule in rules:
        assert http.post("/v1/rules", json=rule).status_code == 201
    response = http.get("/v1/rules/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/yaml")
    assert response.text.startswith("# Alert rules exported")
    document = YAML(typ="safe").load(response.text)
    assert list(document) == ["pipelines"] and list(document["pipelines"]) == ["alerts"]
    loaded = PipelinesConfig.model_validate(document["pipelines"])
    assert [r.model_dump(exclude_none=True) for r in loaded.alerts] == [
        AlertRule.model_validate(r).model_dump(exclude_none=True)
        for r in sorted(rules, key=lambda r: str(r["name"]))
    ]


def test_a_sidecar_out_of_reach_is_503_and_unhealthy(tmp_path: Path) -> None:
    nobody = SidecarAddress(free_port())
    with TestClient(create_app(settings(tmp_path, sidecar=nobody))) as http:
        response = http.post("/v1/rules", json=HOT)
        assert response.status_code == 503
        assert "Dapr sidecar unreachable" in response.json()["detail"]
        health = http.get("/healthz")
        assert health.status_code == 503 and health.json()["checks"]["sidecar"].startswith("unreachable")


# --- alerts from the lake ------------------------------------------------------


def write_alerts(data_dir: Path) -> None:
    write_lake_table(
        data_dir,
        "alerts",
        [
            alert("a-open", "air-1", T0, rule="hot"),
            alert("a-done", "air-2", T0 - timedelta(hours=3), T0 - timedelta(hours=2), rule="cold"),
            alert("a-late", "air-1", T0 - timedelta(days=1), None, rule="hot"),
            alert("a-old", "air-3", T0 - timedelta(days=3), T0 - timedelta(days=3) + timedelta(minutes=1)),
        ],
    )
    # The job wrote a-late again when it closed: one alert, now closed.
    write_lake_table(
        data_dir,
        "alerts",
        [alert("a-late", "air-1", T0 - timedelta(days=1), T0 + timedelta(minutes=1))],
        "part-1",
    )


def alert_ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [a["alert_id"] for a in response.json()["alerts"]]


def test_active_and_past_alerts(http: TestClient, tmp_path: Path) -> None:
    write_alerts(tmp_path / "data")
    assert alert_ids(http.get("/v1/alerts")) == ["a-open", "a-done", "a-late", "a-old"]
    assert alert_ids(http.get("/v1/alerts", params={"state": "active"})) == ["a-open"]
    assert alert_ids(http.get("/v1/alerts", params={"state": "closed"})) == ["a-done", "a-late", "a-old"]
    assert alert_ids(http.get("/v1/alerts", params={"device_id": "air-1"})) == ["a-open", "a-late"]
    since = {"since": "2026-11-25T07:00:00+01:00"}  # 06:00Z: a-done ended at 06:00Z
    assert alert_ids(http.get("/v1/alerts", params=since)) == ["a-open", "a-done", "a-late"]
    assert alert_ids(http.get("/v1/alerts", params={"rule": "cold"})) == ["a-done"]
    assert alert_ids(http.get("/v1/alerts", params={"limit": 1})) == ["a-open"]
    late = http.get("/v1/alerts", params={"device_id": "air-1", "state": "closed"}).json()["alerts"][0]
    assert late == {
        "alert_id": "a-late",
        "device_id": "air-1",
        "metric": "temp",
        "rule": "hot",
        "severity": "warning",
        "state": "closed",
        "started_at": "2026-11-24T08:00:00.000Z",
        "ended_at": "2026-11-25T08:01:00.000Z",
        "value": 42.0,
        "message": None,
    }


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"since": "2026-11-25T08:00:00"}, "has no time zone"),
        ({"since": "yesterday"}, "is not an ISO 8601 instant"),
        ({"state": "open"}, "query.state: Input should be 'active' or 'closed'"),
        ({"limit": 0}, "query.limit"),
        ({"device_id": "x" * 129}, "query.device_id"),
    ],
)
def test_bad_alert_queries_are_422_saying_why(http: TestClient, params: dict[str, Any], says: str) -> None:
    response = http.get("/v1/alerts", params=params)
    assert response.status_code == 422 and says in response.json()["detail"]


def test_hostile_alert_filters_are_data(http: TestClient, tmp_path: Path) -> None:
    write_alerts(tmp_path / "data")
    for hostile in ["' OR 1=1 --", "air-1' OR 'a'='a", "air-1\x00"]:
        assert alert_ids(http.get("/v1/alerts", params={"device_id": hostile, "rule": hostile[:60]})) == []
    assert len(alert_ids(http.get("/v1/alerts"))) == 4


# --- alert events ---------------------------------------------------------------


class FlakyPublisher(EmbeddedPublisher):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = 0

    async def publish(self, topic: str, event_id: str, event_type: str, data: Mapping[str, Any]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("broker down")
        await super().publish(topic, event_id, event_type, data)


def announcer(http: TestClient, store: EmbeddedStateStore, publisher: EmbeddedPublisher) -> AlertAnnouncer:
    return AlertAnnouncer(http.app.state.lake, store, publisher, lookback_s=86_400)  # type: ignore[attr-defined]


def test_events_are_published_once_each_across_restarts(http: TestClient, tmp_path: Path) -> None:
    write_alerts(tmp_path / "data")
    store, publisher = EmbeddedStateStore(), EmbeddedPublisher()
    now = T0 + timedelta(hours=1)
    first = announcer(http, store, publisher)
    assert call(http, first.poll_once, now) == 5
    # a-old closed three days ago: history, not an event
    assert [e.event_id for e in publisher.recent] == [
        "a-late:opened",
        "a-late:closed",
        "a-done:opened",
        "a-done:closed",
        "a-open:opened",
    ]
    opened = publisher.recent[-1]
    assert opened.topic == "alerts" and opened.event_type == "citylake.alert.opened"
    assert opened.data["event"] == "opened" and opened.data["state"] == "active"
    assert opened.data["started_at"] == "2026-11-25T08:00:00.000Z" and opened.data["ended_at"] is None
    assert call(http, first.poll_once, now) == 0

    # A restarted service remembers through the store, not its memory.
    restarted = announcer(http, store, publisher)
    assert call(http, restarted.poll_once, now) == 0
    write_lake_table(
        tmp_path / "data", "alerts", [alert("a-open", "air-1", T0, T0 + timedelta(minutes=30))], "part-2"
    )
    assert call(http, restarted.poll_once, now) == 1
    assert publisher.recent[-1].event_id == "a-open:closed"
    assert publisher.recent[-1].data["ended_at"] == "2026-11-25T08:30:00.000Z"
    assert call(http, announcer(http, store, publisher).poll_once, now) == 0
    assert len(publisher.recent) == 6


def test_an_event_that_failed_to_publish_is_published_at_the_next_poll(
    http: TestClient, tmp_path: Path
) -> None:
    write_lake_table(tmp_path / "data", "alerts", [alert("a1", "air-1", T0), alert("a2", "air-2", T0)])
    store, publisher = EmbeddedStateStore(), FlakyPublisher()
    events = announcer(http, store, publisher)
    publisher.fail_next = 1
    with pytest.raises(ConnectionError):
        call(http, events.poll_once, T0)
    assert call(http, events.poll_once, T0) == 2
    assert [e.event_id for e in publisher.recent] == ["a1:opened", "a2:opened"]


def test_the_rules_and_the_event_memory_share_the_store_without_clashing(
    http: TestClient, tmp_path: Path
) -> None:
    write_lake_table(tmp_path / "data", "alerts", [alert("alert-rules", "air-1", T0)])
    assert http.post("/v1/rules", json=HOT).status_code == 201
    app_state = http.app.state  # type: ignore[attr-defined]
    assert call(http, app_state.announcer.poll_once, T0) == 1
    assert [r["name"] for r in http.get("/v1/rules").json()["rules"]] == ["hot"]
    entry = call(http, app_state.store.get, RULES_KEY)
    assert entry is not None and entry.value["rules"][0]["rule"]["name"] == "hot"


def test_an_unreadable_lake_leaves_the_rules_working(http: TestClient, tmp_path: Path) -> None:
    [bad] = write_lake_table(tmp_path / "data", "alerts", [alert("a1", "air-1", T0)])
    bad.write_bytes(b"PAR1 this is not parquet")
    response = http.get("/v1/alerts")
    assert response.status_code == 503 and "cannot be read now" in response.json()["detail"]
    assert http.post("/v1/rules", json=HOT).status_code == 201
    announcer = http.app.state.announcer  # type: ignore[attr-defined]
    call(http, announcer.poll_and_note)
    assert announcer.last_error.startswith("LakeUnavailable")
    health = http.get("/healthz")
    assert (
        health.status_code == 503 and "last poll failed: LakeUnavailable" in health.json()["checks"]["events"]
    )
    bad.unlink()
    assert http.get("/v1/alerts").status_code == 200


def test_metrics_count_published_events(http: TestClient, tmp_path: Path) -> None:
    write_lake_table(tmp_path / "data", "alerts", [alert("a1", "air-1", T0, T0 + timedelta(minutes=1))])
    call(http, http.app.state.announcer.poll_once, T0)  # type: ignore[attr-defined]
    text = http.get("/metrics").text
    assert 'citylake_alerts_events_published_total{event="opened"} 1.0' in text
    assert 'citylake_alerts_events_published_total{event="closed"} 1.0' in text
    assert http.app.state.publisher.recent[0].event_id == "a1:opened"  # type: ignore[attr-defined]


def test_api_keys_guard_everything_but_healthz(tmp_path: Path) -> None:
    with TestClient(create_app(settings(tmp_path, api_keys=["k1"]))) as http:
        assert http.get("/healthz").status_code == 200
        for path in ("/v1/rules", "/v1/rules/export", "/v1/rules/hot", "/v1/alerts", "/metrics"):
            assert http.get(path).status_code == 401, path
        assert http.post("/v1/rules", json=HOT).status_code == 401
        assert http.delete("/v1/rules/hot").status_code == 401
        assert http.post("/v1/rules", json=HOT, headers={"X-API-Key": "k1"}).status_code == 201
        assert http.get("/v1/alerts", headers={"X-API-Key": "k1"}).status_code == 200


def test_openapi_documents_the_routes(http: TestClient) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/rules", "/v1/rules/export", "/v1/rules/{name}", "/v1/alerts", "/healthz", "/metrics"} <= set(
        paths
    )
    assert {"get", "put", "delete"} <= set(paths["/v1/rules/{name}"])
    assert http.get("/docs").status_code == 200
