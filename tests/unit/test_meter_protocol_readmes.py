"""Every key of the new protocols' config models (issue 15: DL/T 645, CJ/T 188,
M-Bus, LoRaWAN) is documented in its folder's README, as the Modbus and MQTT
READMEs are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from citylake.ingest.cjt188.config import Cjt188Meter, Cjt188SourceConfig
from citylake.ingest.dlt645.config import Dlt645Meter, Dlt645SourceConfig
from citylake.ingest.lorawan.config import LorawanSourceConfig
from citylake.ingest.mbus.config import MbusMeter, MbusSourceConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("folder", "source", "meter"),
    [
        ("dlt645", Dlt645SourceConfig, Dlt645Meter),
        ("cjt188", Cjt188SourceConfig, Cjt188Meter),
        ("mbus", MbusSourceConfig, MbusMeter),
        ("lorawan", LorawanSourceConfig, None),
    ],
)
def test_every_key_is_documented(folder: str, source: type[BaseModel], meter: type[BaseModel] | None) -> None:
    readme = (REPO / "ingest" / folder / "README.md").read_text()
    for key in source.model_fields:
        assert f"`{key}`" in readme, f"ingest/{folder}/README.md does not document {key}"
    for key in meter.model_fields if meter else ():
        assert f"`meters[].{key}`" in readme or f"`{key}`" in readme, (
            f"ingest/{folder}/README.md does not document meters[].{key}"
        )
