"""deploy/: every overlay passes a real Kubernetes API server's checks
(`kubectl apply --dry-run=server`), beside the offline kubeconform check of
tests/unit/test_deploy.py.

The server is kube-apiserver over etcd, at the Kubernetes release the offline
schemas came from, with the Dapr and Flink operator CRDs of those same
releases installed (tools/setup/k8s-apiserver.sh builds and fetches them).
It decodes strictly, defaults, runs the built-in validation and the default
admission plugins, and checks the CRDs' structural schemas; what it does not
do (no controllers, operators, webhooks or scheduling) is in deploy/README.md.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from citylake_devstack import ComponentUnavailable
from citylake_devstack.kube import KubeApiServer, crd_files, kube_binary, schema_sources, start_kube_apiserver
from tests.overlays import DEPLOY, TIERS, build, kubeconform

pytestmark = pytest.mark.integration


Doc = dict[str, Any]


def _flink_versions_added() -> list[str]:
    """The flinkVersion values deploy/schemas/generate.py adds to the 1.10.0
    CRD (the newest on Maven Central), so the server gets the same one edit."""
    spec = importlib.util.spec_from_file_location(
        "citylake_schema_generate", DEPLOY / "schemas" / "generate.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.FLINK_VERSIONS_ADDED)


def crd_documents() -> list[Doc]:
    """Every cached CRD, with the flinkVersion values the offline schema has."""
    added = _flink_versions_added()
    docs = []
    for path in crd_files(schema_sources()):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            assert doc["kind"] == "CustomResourceDefinition", path
            for version in doc["spec"]["versions"]:
                spec = version["schema"]["openAPIV3Schema"]["properties"].get("spec", {})
                enum = spec.get("properties", {}).get("flinkVersion", {}).get("enum")
                if enum is not None:
                    enum.extend(v for v in added if v not in enum)
            docs.append(doc)
    return docs


def docs_of(tier: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(build(tier)) if d]


def ok(done: subprocess.CompletedProcess[str], what: str) -> str:
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{done.stderr}{done.stdout}"
    return done.stdout


def wait_served(server: KubeApiServer, resources: set[str], timeout_s: float = 60) -> None:
    """Until discovery lists every CRD's resource: a CRD is served to clients
    only once it is `Established`, and a moment after."""
    deadline = time.monotonic() + timeout_s
    missing = set(resources)
    while time.monotonic() < deadline:
        done = server.kubectl("api-resources", "-o", "name")
        if done.returncode == 0:
            missing = resources - set(done.stdout.split())
            if not missing:
                return
        time.sleep(0.5)
    raise AssertionError(f"API server does not serve {sorted(missing)} after {timeout_s:.0f} s")


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    """One API server for every overlay: the CRDs installed, the tiers'
    namespaces created (really: NamespaceLifecycle admission refuses objects
    in a namespace that does not exist, even in a dry run)."""
    try:
        crds = crd_documents()
        server = start_kube_apiserver(tmp_path_factory.mktemp("kube-apiserver"))
    except ComponentUnavailable as exc:
        pytest.fail(f"could not start a real component: {exc}", pytrace=False)
    try:
        # Server-side apply: the Flink CRDs are too large for client-side
        # apply's last-applied annotation (262144 bytes).
        ok(
            server.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(crds)),
            "installing the CRDs",
        )
        names = [d["metadata"]["name"] for d in crds]
        # Polled through discovery rather than `kubectl wait --for
        # condition=Established`, which errors out on a loaded machine when it
        # reads a CRD before the server gave it any status conditions.
        wait_served(server, set(names))
        namespaces = [d for t in TIERS for d in docs_of(t) if d["kind"] == "Namespace"]
        ok(
            server.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(namespaces)),
            "creating the namespaces",
        )
        yield server
    finally:
        server.stop()


def dry_run(server: KubeApiServer, docs: list[Doc]) -> subprocess.CompletedProcess[str]:
    # --validate=strict: an unknown or duplicate field is an error, not a warning.
    return server.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-o",
        "json",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )


def test_server_is_the_release_the_schemas_came_from() -> None:
    sources = schema_sources()
    done = subprocess.run(
        [str(kube_binary("kube-apiserver")), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert ok(done, "kube-apiserver --version").split() == ["Kubernetes", f"v{sources.kubernetes}"]
    dapr = {p.parent.name for p in crd_files(sources) if p.suffix == ".yaml"}
    flink = {p.parent.name for p in crd_files(sources) if p.suffix == ".yml"}
    assert dapr == {f"dapr-{sources.dapr}"}
    assert flink == {f"flink-kubernetes-operator-{sources.flink_operator}"}


@pytest.mark.parametrize("tier", TIERS)
def test_overlay_passes_server_side_dry_run(apiserver: KubeApiServer, tier: str) -> None:
    docs = docs_of(tier)
    done = dry_run(apiserver, docs)
    out = json.loads(ok(done, f"kubectl apply --dry-run=server (deploy/overlays/{tier})"))
    # Every object came back from the server, defaulted: proof it was sent and
    # accepted, not skipped.
    returned = out["items"] if out.get("kind") == "List" else [out]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in returned) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in docs
    )
    for d in returned:
        if d["kind"] == "Deployment":
            # Defaulting ran: a field none of the manifests sets.
            assert d["spec"]["template"]["spec"]["schedulerName"] == "default-scheduler", d["metadata"][
                "name"
            ]
    assert "Warning" not in done.stderr, done.stderr
    # A dry run stores nothing.
    stored = ok(
        apiserver.kubectl(
            "get", "deployments,flinkdeployments,components", "-n", f"citylake-{tier}", "-o", "name"
        ),
        "kubectl get",
    )
    assert stored.strip() == ""


def _first(docs: list[Doc], kind: str) -> Doc:
    return copy.deepcopy(next(d for d in docs if d["kind"] == kind))


def _selector_mismatch(docs: list[Doc]) -> Doc:
    d = _first(docs, "Deployment")
    d["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "not-the-template"}
    return d


def _bad_flink_version(docs: list[Doc]) -> Doc:
    d = _first(docs, "FlinkDeployment")
    d["spec"]["flinkVersion"] = "v9_9"
    return d


def _unknown_component_field(docs: list[Doc]) -> Doc:
    d = _first(docs, "Component")
    d["spec"]["typo"] = "x"
    return d


def _missing_namespace(docs: list[Doc]) -> Doc:
    d = _first(docs, "ConfigMap")
    d["metadata"]["namespace"] = "citylake-nowhere"
    return d


# Each breaks one thing in a real manifest of the edge overlay, with the
# server's refusal and whether kubeconform's offline schemas already catch it:
# the ones they do not (the server's own validation and admission) are why
# this check exists.
BROKEN: dict[str, tuple[Callable[[list[Doc]], Doc], str, bool]] = {
    "selector-not-matching-template": (
        _selector_mismatch,
        r"`selector` does not match template `labels`",
        False,
    ),
    "flink-version-outside-crd-enum": (
        _bad_flink_version,
        r"spec\.flinkVersion: Unsupported value: \"v9_9\"",
        True,
    ),
    "unknown-field-in-dapr-component": (_unknown_component_field, r"unknown field \"spec\.typo\"", True),
    "namespace-that-does-not-exist": (
        _missing_namespace,
        r"namespaces \"citylake-nowhere\" not found",
        False,
    ),
}


def kubeconform_accepts(doc: Doc) -> bool:
    return kubeconform(yaml.safe_dump(doc)).returncode == 0


@pytest.mark.parametrize("case", BROKEN)
def test_server_rejects_a_broken_manifest(apiserver: KubeApiServer, case: str) -> None:
    breaks, message, offline_too = BROKEN[case]
    broken = breaks(docs_of("edge"))
    done = dry_run(apiserver, [broken])
    assert done.returncode != 0, f"{case}: accepted:\n{done.stdout}"
    assert re.search(message, done.stderr), f"{case}: {done.stderr}"
    assert kubeconform_accepts(broken) is not offline_too, f"{case}: kubeconform offline_too={offline_too}"
