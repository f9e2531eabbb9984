"""The dashboard in a real browser: `citylake serve query` over a small lake
(with an API key, and a device named like an attack), driven by headless
Chromium. The DOM after the page's scripts ran must show the map, the alerts
and the lake stats, with the hostile name as text; the screenshot must be a
real picture with the status colours on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citylake_devstack import ComponentUnavailable, free_port, start_service
from tests.dashboard_lake import ACTIVE_ALERTS, HOSTILE_MESSAGE, HOSTILE_NAME, LOCATED, build_dashboard_lake
from tests.headless_chromium import decode_png, find_chromium, parse_html, run_chromium

pytestmark = pytest.mark.integration

KEY = "dashboard-browser-key"
WINDOW = (1280, 1000)
# dashboard.css's status colours and the alert ring, as a screenshot has them.
ONLINE, OFFLINE, ALERT = (0x1F, 0x9D, 0x55), (0xD6, 0x45, 0x45), (0xF0, 0x8C, 0x00)


@pytest.fixture
def chromium() -> str:
    try:
        return find_chromium()
    except ComponentUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def dashboard_url(tmp_path: Path) -> Iterator[str]:
    build_dashboard_lake(tmp_path / "data")
    config = tmp_path / "city.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "test-site",
                "data_dir": str(tmp_path / "data"),
                "sources": [],
                "services": {"query": {"api_keys": [KEY]}},
            }
        )
    )
    port = free_port()
    try:
        service = start_service("query", config, port, tmp_path)
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start the query service: {exc}", pytrace=False)
    with service:
        yield f"http://127.0.0.1:{port}/dashboard"


def test_dashboard_shows_map_alerts_and_lake_with_hostile_names_as_text(
    chromium: str, dashboard_url: str, tmp_path: Path
) -> None:
    run = run_chromium(chromium, f"{dashboard_url}?key={KEY}", tmp_path / "profile-dom", "--dump-dom")
    assert run.console() == [], "the page logged errors:\n" + "\n".join(run.console())
    dom = parse_html(run.stdout)

    # The map: one marker per device with a position, coloured by status.
    svg_map = dom.by_id("map")
    assert svg_map.tag == "svg"
    markers = svg_map.find("circle", cls="marker")
    assert sorted(m.attrs["data-device-id"] for m in markers) == LOCATED
    status = {m.attrs["data-device-id"]: m.classes & {"status-online", "status-offline"} for m in markers}
    assert status == {"air-1": {"status-online"}, "air-2": {"status-offline"}, "cam-1": {"status-online"}}
    assert len(svg_map.find("circle", cls="alert-ring")) == 2  # air-2 and cam-1

    # Active alerts, newest first; the closed one is not listed.
    items = dom.by_id("alerts").find("li")
    assert [li.attrs.get("data-alert-id") for li in items] == ACTIVE_ALERTS
    hostile_alert = items[1]
    assert f"{HOSTILE_NAME} (cam-1)" in hostile_alert.text
    assert HOSTILE_MESSAGE in hostile_alert.text
    assert dom.by_id("alert-count").text == "2"

    # Lake stats: a row per table, readings with its one file and 80 rows.
    readings = dom.by_id("lake-stats").find("tr", data_table="readings")
    assert len(readings) == 1
    cells = [td.text for td in readings[0].find("td")]
    assert cells[:3] == ["readings", "1", "80"]

    # Live values: the newest alert's device is selected, its latest readings shown.
    rows = dom.by_id("device-latest").find("tr")
    assert [tr.attrs["data-metric"] for tr in rows if "data-metric" in tr.attrs] == ["pm25", "temp"]
    assert "Hanzhong Rd air" in dom.by_id("device-detail").text
    city = dom.by_id("metric-latest").find("tr", cls="pickable")
    assert [tr.attrs["data-device-id"] for tr in city] == ["air-1", "air-2", "air-9", "cam-1"]

    # The hostile name and message are text wherever they appear, never markup:
    # no element the page did not build itself, no handler attribute.
    assert dom.find("img") == [] and len(dom.find("svg")) == 1
    assert [s.attrs.get("src") for s in dom.find("script")] == ["dashboard/dashboard.js"]
    assert not [e for e in dom.iter() if any(name.startswith("on") for name in e.attrs)]
    titles = [t.text for t in svg_map.find("title")]
    assert f"{HOSTILE_NAME} (cam-1) — online" in titles
    options = [o.text for o in dom.by_id("device-select").find("option")]
    assert f"{HOSTILE_NAME} (cam-1)" in options
    # The key came in the address and left it; it is not written into the page.
    assert KEY not in run.stdout
    assert dom.by_id("key-form").attrs.get("hidden") is not None


def test_screenshot_is_a_real_picture(chromium: str, dashboard_url: str, tmp_path: Path) -> None:
    path = tmp_path / "dashboard.png"
    run = run_chromium(
        chromium,
        f"{dashboard_url}#key={KEY}",
        tmp_path / "profile-shot",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--screenshot={path}",
    )
    assert run.console() == [], "the page logged errors:\n" + "\n".join(run.console())
    data = path.read_bytes()
    assert len(data) > 10_000
    image = decode_png(data)
    assert (image.width, image.height) == WINDOW
    # Text, panels, map: a blank or single-colour page has a handful of colours.
    assert image.distinct_colours() > 200
    # Marker fills and the alert rings, drawn from the lake's devices.
    for colour in (ONLINE, OFFLINE, ALERT):
        assert image.count(colour) > 50, colour


def test_without_a_key_the_page_asks_for_one(chromium: str, dashboard_url: str, tmp_path: Path) -> None:
    run = run_chromium(chromium, dashboard_url, tmp_path / "profile-nokey", "--dump-dom")
    dom = parse_html(run.stdout)
    assert dom.by_id("key-form").attrs.get("hidden") is None
    assert "this service needs an API key" in dom.by_id("problem").text
    assert dom.by_id("map").find("circle") == []
    assert dom.by_id("alerts").find("li") == []
