"""The deploy overlays as both deploy tests see them: built by kustomize and
checked offline by kubeconform, the tools tools/setup/k8s-tools.sh puts in
.cache/bin (a missing one fails the test with that hint)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import pytest

from citylake.pipelines.jars import cache_dir

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
TIERS = ("edge", "region", "centre")
SCHEMA_LOCATION = str(DEPLOY / "schemas" / "{{ .ResourceKind }}{{ .KindSuffix }}.json")


def tool(name: str) -> Path:
    path = cache_dir() / "bin" / name
    if not path.exists():
        pytest.fail(f"{name} not found at {path}; run `make setup` (tools/setup/k8s-tools.sh builds it)")
    return path


@functools.cache
def build(tier: str) -> str:
    """`kustomize build deploy/overlays/<tier>`, once per test session."""
    done = subprocess.run(
        [str(tool("kustomize")), "build", str(DEPLOY / "overlays" / tier)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, f"kustomize build deploy/overlays/{tier} failed:\n{done.stderr}"
    return done.stdout


def kubeconform(manifests: str, *options: str) -> subprocess.CompletedProcess[str]:
    """kubeconform -strict against the repo's schemas (deploy/schemas/)."""
    return subprocess.run(
        [str(tool("kubeconform")), "-strict", *options, "-schema-location", SCHEMA_LOCATION, "-"],
        input=manifests,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
