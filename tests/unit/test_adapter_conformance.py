"""What every protocol folder holds, checked for each registered adapter: one
place per protocol (folder + entry point), a sample its own model accepts, a
README naming every key, and a simulator under ``citylake simulate``."""

from __future__ import annotations

import re
import tomllib
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from citylake.config import SourceConfig
from citylake.ingest.base import PollingSource, StreamingSource
from citylake.ingest.registry import GROUP, adapter_class, adapter_types
from citylake_devstack.commands.simulate import app as simulate_app

REPO = Path(__file__).resolve().parents[2]
DECLARED = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]


def test_declared_adapters_are_the_installed_ones_and_each_has_its_folder() -> None:
    # A line added to pyproject.toml reaches entry_points() only after
    # `make setup` reinstalls the package; say so rather than test half a set.
    assert sorted(DECLARED) == adapter_types(), (
        "pyproject's adapters differ from the installed ones: make setup"
    )
    folders = {p.parent.name for p in (REPO / "ingest").glob("*/adapter.py")}
    assert folders == set(DECLARED), "every ingest/<protocol>/adapter.py needs its entry point, and back"
    for name, target in DECLARED.items():
        assert target.startswith(f"citylake.ingest.{name}.adapter:"), (name, target)


@pytest.mark.parametrize("type_name", adapter_types())
def test_every_adapter_conforms(type_name: str) -> None:
    """The shape every protocol folder has: a sample that its own model
    accepts, a README, and an adapter built from the sample without I/O."""
    folder = REPO / "ingest" / type_name
    assert (folder / "README.md").exists(), f"adapter {type_name} has no README.md"
    sample = folder / "sample.yaml"
    assert sample.exists(), f"adapter {type_name} has no sample.yaml"
    data = yaml.safe_load(sample.read_text())
    assert data["type"] == type_name
    cls = adapter_class(type_name)
    assert issubclass(cls.config_model, SourceConfig)
    source = cls(cls.config_model.model_validate(data))
    assert isinstance(source.validate(), list)
    assert isinstance(source, StreamingSource | PollingSource)


def _models(annotation: object, found: set[type[BaseModel]]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in found:
            return
        found.add(annotation)
        for field in annotation.model_fields.values():
            _models(field.annotation, found)
        return
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            _models(arg, found)


@pytest.mark.parametrize("type_name", adapter_types())
def test_every_adapter_readme_names_each_of_its_keys(type_name: str) -> None:
    """The keys common to every source (name, type, enabled, metric_types) are
    documented once in ingest/README.md; the rest in the protocol's README."""
    readme = (REPO / "ingest" / type_name / "README.md").read_text()
    common = set(SourceConfig.model_fields) - {"url"}  # url's meaning is the protocol's
    models: set[type[BaseModel]] = set()
    _models(adapter_class(type_name).config_model, models)
    missing = sorted(
        f"{model.__name__}.{key}"
        for model in models
        for key in model.model_fields
        if key not in common and not re.search(rf"[`.]{key}`", readme)
    )
    assert not missing, f"ingest/{type_name}/README.md names not these keys: {missing}"
    shared = (REPO / "ingest" / "README.md").read_text()
    assert all(f"`{key}`" in shared for key in common), "ingest/README.md names the keys every source has"


@pytest.mark.parametrize("type_name", adapter_types())
def test_every_adapter_has_a_simulator(type_name: str) -> None:
    commands = {
        c.name or (c.callback.__name__ if c.callback else "") for c in simulate_app.registered_commands
    }
    assert type_name.replace("_", "-") in commands or type_name in commands, (
        f"no `citylake simulate {type_name.replace('_', '-')}` command"
    )
