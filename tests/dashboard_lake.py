"""A small lake for the dashboard's tests: a registry with positions, readings
and alerts, and one device whose name is an attack.

Five registry devices in Nanjing: three with positions (air-1 online, air-2
offline, cam-1 online and named HOSTILE_NAME), pump-1 with no position and
no status, cam-0 at 0,0 (GB28181's "position unknown"). air-9 reports
readings but is not in the registry. Two alerts are active (cam-1, whose
message is an attack too, and air-2); one on air-1 opened and closed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from tests.lakedata import T0, alert, device, reading, write_lake_readings, write_lake_table

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_MESSAGE = "<script>alert(2)</script> temp too high"
LOCATED = ["air-1", "air-2", "cam-1"]
REGISTERED = ["air-1", "air-2", "cam-0", "cam-1", "pump-1"]
ACTIVE_ALERTS = ["a-3", "a-1"]  # newest first
MINUTES = 10
READING_DEVICES = ["air-1", "air-2", "cam-1", "air-9"]
READING_ROWS = len(READING_DEVICES) * MINUTES * 2


def registry_rows(with_positions: bool = True) -> list[dict[str, object]]:
    def at(lon: float, lat: float) -> dict[str, object]:
        return {"longitude": lon, "latitude": lat} if with_positions else {}

    seen = {"first_seen": T0 - timedelta(days=1), "last_seen": T0 + timedelta(minutes=MINUTES)}
    return [
        device(
            "air-1",
            name="Gulou air station",
            type="air_quality",
            protocol="mqtt",
            civil_code="32010601",
            address="Zhongshan Rd 1",
            status="online",
            **at(118.7800, 32.0700),
            **seen,
        ),
        device(
            "air-2",
            name="Hanzhong Rd air",
            type="air_quality",
            protocol="mqtt",
            civil_code="32010201",
            district="Qinhuai",
            status="offline",
            **at(118.7600, 32.0400),
            **seen,
        ),
        device(
            "cam-1",
            name=HOSTILE_NAME,
            type="ipc",
            protocol="gb28181",
            civil_code="32010601",
            address='"><svg onload=alert(3)>',
            status="online",
            **at(118.8000, 32.0600),
            **seen,
        ),
        device(
            "pump-1", name="Pump station 1", type="pump", protocol="modbus", civil_code="32010601", **seen
        ),
        # GB28181 catalogs report 0,0 when a camera does not know where it is.
        device(
            "cam-0",
            name="Camera without GPS",
            type="ipc",
            district="Qinhuai",
            status="online",
            **at(0.0, 0.0),
            **seen,
        ),
    ]


def build_dashboard_lake(data_dir: Path, with_positions: bool = True) -> None:
    rows = []
    for number, device_id in enumerate(READING_DEVICES):
        for minute in range(MINUTES):
            ts = T0 + timedelta(minutes=minute)
            rows.append(reading(device_id, "temp", ts, 20.0 + number + minute / 10))
            rows.append(reading(device_id, "pm25", ts, 30.0 + minute))
    write_lake_readings(data_dir, rows)
    write_lake_table(data_dir, "devices", registry_rows(with_positions))
    write_lake_table(
        data_dir,
        "alerts",
        [
            alert("a-1", "cam-1", T0 + timedelta(minutes=5), severity="critical", message=HOSTILE_MESSAGE),
            alert("a-2", "air-1", T0 + timedelta(minutes=2)),
            # The job's closing row for a-2: the view shows a-2 closed.
            alert("a-2", "air-1", T0 + timedelta(minutes=2), ended_at=T0 + timedelta(minutes=4)),
            alert("a-3", "air-2", T0 + timedelta(minutes=7), rule="smog", metric="pm25", value=39.0),
        ],
    )
