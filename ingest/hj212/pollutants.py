"""HJ 212-2017 pollutant and parameter codes -> citylake metric names and units.

Codes and units follow HJ 212-2017 appendix B (air: ``a``, water: ``w``).
Concentrations at ambient air quality stations (ST 22) are reported in
ug/m3, at flue gas outlets (ST 31) in mg/m3: the table gives the unit of the
code as the standard lists it, and a source's ``codes`` key overrides any row.
``cou_unit`` is the unit of the ``-Cou`` (cumulative amount) field of minute,
hourly and daily data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Pollutant:
    metric: str
    unit: str | None
    cou_unit: str | None = None


POLLUTANTS: dict[str, Pollutant] = {
    # meteorological and flue gas parameters
    "a01001": Pollutant("temperature", "degC"),
    "a01002": Pollutant("humidity", "%"),
    "a01006": Pollutant("pressure", "kPa"),
    "a01007": Pollutant("wind_speed", "m/s"),
    "a01008": Pollutant("wind_direction", "deg"),
    "a01011": Pollutant("flue_gas_velocity", "m/s"),
    "a01012": Pollutant("flue_gas_temperature", "degC"),
    "a01013": Pollutant("flue_gas_pressure", "kPa"),
    "a01014": Pollutant("flue_gas_humidity", "%"),
    "a00000": Pollutant("flue_gas_flow", "m3/s", "m3"),
    "a19001": Pollutant("oxygen", "%"),
    # air pollutants
    "a21026": Pollutant("so2", "mg/m3", "kg"),
    "a21002": Pollutant("nox", "mg/m3", "kg"),
    "a21003": Pollutant("no", "mg/m3", "kg"),
    "a21004": Pollutant("no2", "mg/m3", "kg"),
    "a21005": Pollutant("co", "mg/m3", "kg"),
    "a21024": Pollutant("hcl", "mg/m3", "kg"),
    "a05024": Pollutant("o3", "ug/m3"),
    "a34001": Pollutant("tsp", "ug/m3"),
    "a34002": Pollutant("pm10", "ug/m3"),
    "a34004": Pollutant("pm25", "ug/m3"),
    "a34013": Pollutant("smoke_dust", "mg/m3", "kg"),
    # water
    "w00000": Pollutant("wastewater_flow", "L/s", "m3"),
    "w01001": Pollutant("ph", None),
    "w01003": Pollutant("turbidity", "NTU"),
    "w01009": Pollutant("dissolved_oxygen", "mg/L"),
    "w01010": Pollutant("water_temperature", "degC"),
    "w01014": Pollutant("conductivity", "uS/cm"),
    "w01017": Pollutant("bod5", "mg/L", "kg"),
    "w01018": Pollutant("cod", "mg/L", "kg"),
    "w01019": Pollutant("permanganate_index", "mg/L", "kg"),
    "w21001": Pollutant("total_nitrogen", "mg/L", "kg"),
    "w21003": Pollutant("ammonia_nitrogen", "mg/L", "kg"),
    "w21011": Pollutant("total_phosphorus", "mg/L", "kg"),
}

# ST (system code, HJ 212-2017 table 5) -> devices.type.
SYSTEM_TYPES: dict[str, str] = {
    "21": "surface_water_quality_station",
    "22": "air_quality_station",
    "23": "noise_station",
    "24": "groundwater_quality_station",
    "25": "soil_quality_station",
    "26": "seawater_quality_station",
    "27": "vocs_station",
    "31": "air_pollution_source",
    "32": "surface_water_pollution_source",
    "33": "groundwater_pollution_source",
    "34": "marine_pollution_source",
    "35": "soil_pollution_source",
    "36": "noise_pollution_source",
    "37": "vibration_pollution_source",
    "38": "radioactive_pollution_source",
    "39": "construction_dust",
    "41": "electromagnetic_pollution_source",
}
