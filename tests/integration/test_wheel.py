"""The product install: citylake's wheel in a clean venv, constraints.txt, no
dev extra - what deploy/Dockerfile's image holds.

One venv for the module (building the wheel and installing ~100 locked
packages is most of the run). The venv is created without pip and filled by
the shared venv's pip (``pip --python``), which skips ensurepip. The
dependencies come from a local wheel directory repacked from the shared venv
(tests/wheelhouse.py says why: from the index the install took 10m47s, and
pip's cache does not shorten a second run), with --no-index, so pip resolves
against constraints.txt exactly as the image build does. Building citylake's
own wheel uses the index for its build backend (setuptools>=69, wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citylake_devstack import Mosquitto, free_port
from tests.conftest import mqtt_source
from tests.wheelhouse import build_wheelhouse

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT_S = 600

# What a product process must never load: the dev extra's packages and
# citylake's dev code (the test bench, the scale report, the simulators).
DEV_ONLY = ("matplotlib", "pytest", "_pytest", "citylake_devstack")

# The modules the product commands import inside their bodies (serve, run,
# pipeline, lake maintain, ingest's ops server), so that the check below covers
# what those commands reach, not only what `import citylake.cli` does.
PRODUCT_MODULES = (
    "citylake.cli",
    "citylake.site",
    "citylake.ingest.ops",
    "citylake.ingest.registry",
    "citylake.lake.maintenance_ops",
    "citylake.pipelines.runner",
    "citylake.pipelines.local_jvm",
    "citylake.pipelines.alerts.follow",
    "citylake.pipelines.alerts.rulesource",
    "citylake.services.query.app",
    "citylake.services.registry.app",
    "citylake.services.registry.configured",
    "citylake.services.alerts.app",
    "citylake.services.auth",
    "citylake.services.sidecar",
    "citylake.config.exposure",
)


class ProductVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "bin" / "python"
        self.citylake = root / "bin" / "citylake"
        self.timings: dict[str, float] = {}

    def run(self, *argv: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # A clean environment: nothing from the checkout or the shared venv leaks in.
        env = {"PATH": f"{self.root / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
        return subprocess.run(
            argv, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )


def _step(name: str, timings: dict[str, float], argv: list[str], timeout: float) -> None:
    started = time.monotonic()
    # Without PYTHONPATH: pip run under the new venv's python (--python) would
    # see the checkout (and the egg-info the wheel build leaves) as citylake
    # already installed, and skip the wheel.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        argv, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    timings[name] = time.monotonic() - started
    assert done.returncode == 0, (
        f"{name} failed ({' '.join(argv)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def product() -> Iterator[ProductVenv]:
    # Not under pytest's basetemp: concurrent pytest runs on the machine prune
    # each other's older basetemp folders, which removed a venv mid-install.
    with tempfile.TemporaryDirectory(prefix="citylake-wheel-") as folder:
        yield _product_venv(Path(folder))


def _product_venv(base: Path) -> ProductVenv:
    dist = base / "dist"
    venv = ProductVenv(base / "venv")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # From a copy of what the wheel is made of: setuptools writes build/ and an
    # egg-info into the source folder, and a stale build/lib would put deleted
    # modules into later wheels of the checkout.
    source = base / "source"
    shutil.copytree(REPO / "citylake", source / "citylake", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    _step("build wheel", venv.timings, [*pip, "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], 300)
    [wheel] = dist.glob("citylake-*.whl")
    started = time.monotonic()
    wheelhouse = base / "wheelhouse"
    build_wheelhouse(wheelhouse)
    venv.timings["repack dependencies"] = time.monotonic() - started
    # sys.executable is the shared venv's python; venv builds on its base
    # interpreter, so the new venv sees none of the shared venv's packages.
    _step("create venv", venv.timings, [sys.executable, "-m", "venv", "--without-pip", str(venv.root)], 120)
    _step(
        "install",
        venv.timings,
        [
            *pip,
            "--python",
            str(venv.python),
            "install",
            "-q",
            "--no-compile",  # the .pyc of 1 GB of packages; imports compile what they load
            "--no-index",
            "--find-links",
            str(wheelhouse),
            "-c",
            str(REPO / "constraints.txt"),
            str(wheel),
        ],
        INSTALL_TIMEOUT_S,
    )
    # Shown with -s (and kept in the captured output of a failure).
    sys.stderr.write(f"product venv: {', '.join(f'{k} {v:.1f}s' for k, v in venv.timings.items())}\n")
    return venv


def test_the_wheel_installs_without_the_dev_extra(product: ProductVenv, tmp_path: Path) -> None:
    listed = product.run(str(product.python), "-m", "pip", "--version", cwd=tmp_path)
    assert listed.returncode != 0, "the venv was to be created without pip"
    found = product.run(
        str(product.python),
        "-c",
        "import importlib.util as u; print([m for m in ('matplotlib', 'pytest', 'mypy') if u.find_spec(m)])",
        cwd=tmp_path,
    )
    assert found.stdout.strip() == "[]", f"dev-only packages in the product venv: {found.stdout}"


def test_help_lists_every_command(product: ProductVenv, tmp_path: Path) -> None:
    shown = product.run(str(product.citylake), "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    for command in ("ingest", "run", "serve", "sql", "pipeline", "lake", "sync"):
        assert f" {command} " in shown.stdout, f"{command} missing from --help:\n{shown.stdout}"
    # The test bench's commands are not in the product; --help says where they are.
    for command in ("simulate", "scale", "demo"):
        assert f" {command} " not in shown.stdout.split("demo, simulate and scale come with")[0], command
    assert "demo, simulate and scale come with the test bench" in " ".join(shown.stdout.split())


def test_product_modules_load_no_dev_code(product: ProductVenv, tmp_path: Path) -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {PRODUCT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({DEV_ONLY!r}) or 'simulator' in m))\n"
        "print(importlib.import_module('citylake').__file__)\n"
    )
    done = product.run(str(product.python), "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    loaded, where = done.stdout.strip().splitlines()
    assert loaded == "[]", f"product modules loaded dev code: {loaded}"
    # The installed copy, not the checkout: the wheel is what was tested.
    assert where.startswith(str(product.root)), where


def test_ingest_check_against_a_real_broker(
    product: ProductVenv, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    def config(url: str) -> Path:
        path = tmp_path / "city.yaml"
        document = {"site": "wheel-site", "data_dir": str(tmp_path / "data"), "sources": [mqtt_source(url)]}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    ok = product.run(
        str(product.citylake), "ingest", "--check", "--config", str(config(mosquitto.url)), cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   sensors" in ok.stderr
    closed = f"mqtt://127.0.0.1:{free_port()}"
    refused = product.run(
        str(product.citylake), "ingest", "--check", "--config", str(config(closed)), cwd=tmp_path
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "fail sensors" in refused.stderr


def test_the_wheel_holds_no_test_bench(product: ProductVenv, tmp_path: Path) -> None:
    done = product.run(
        str(product.python),
        "-c",
        "import importlib.util as u; print([m for m in ('citylake_devstack', 'citylake.devstack',"
        " 'citylake.scalereport', 'citylake.cli.simulate') if u.find_spec(m)])",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"test-bench modules in the product: {done.stdout}"
    unknown = product.run(str(product.citylake), "scale", "report", str(tmp_path), cwd=tmp_path)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "No such command 'scale'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
