"""deploy/: every overlay builds, validates offline against the schemas kept in
deploy/schemas/, and agrees with the code it deploys.

kustomize and kubeconform come from tools/setup/k8s-tools.sh (`make setup`),
in .cache/bin/; a missing one fails the test with that hint. No cluster is
involved: what a cluster would still reject or do differently is listed in
deploy/README.md.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from citylake.cli import app as cli_app
from citylake.cli.serve import ServiceName
from citylake.config import CityConfig, LoadedConfig, load_config
from tests.overlays import DEPLOY, REPO, TIERS, build, kubeconform

CONFIG_DIR = "/etc/citylake"
IMAGE_SOURCE = "/opt/citylake"  # where deploy/Dockerfile puts the repository
PYTHON = "/usr/local/bin/python3"  # the interpreter of the python:3.11 base image

# The seed's edge node, and what its OS, kubelet and k3s agent keep for
# themselves (deploy/README.md, "The edge budget").
EDGE_CPU_M = 2000
EDGE_MEMORY_MI = 4096
EDGE_RESERVED_CPU_M = 200
EDGE_RESERVED_MEMORY_MI = 448
# Secrets the operator makes (deploy/README.md, "Secrets"): they hold keys and
# passwords, so they are never in git, and the manifests only name them.
OPERATOR_SECRETS = {
    "citylake-dapr-api-token": {"token"},
    "citylake-dapr-app-token": {"token"},
    "citylake-keys": {"query", "registry", "alerts"},
    "citylake-broker": {"passwords", "ingest-password", "dapr-url"},
    "citylake-sync": {"key", "ca.crt"},
    "citylake-sync-receiver": {"keys", "tls.crt", "tls.key"},
}
# What a service process holds before DuckDB's memory_limit_mb (measured: the
# registry idles at 190 MiB RSS, query at 145 MiB).
SERVICE_BASELINE_MI = 192
# The edge's processes' measured peak RSS, MiB (deploy/README.md, "The edge
# budget", says how each was measured), and the rule the edge's sizes follow:
# request = the peak, limit = EDGE_HEADROOM x the peak, rounded up to 8 MiB.
EDGE_PEAK_RSS_MI = {
    "ingest/ingest": 197.9,
    "query/query": 302.1,
    "query/daprd": 111.4,
    "registry/registry": 196.2,
    "registry/daprd": 89.2,
    "alerts/alerts": 183.7,
    "alerts/daprd": 89.2,
    "lake-maintain/lake-maintain": 207.7,
    "mosquitto/mosquitto": 40.2,  # 8.2 measured + its 32 MiB queue bound
    "sync-push/sync-push": 142.3,
}
EDGE_HEADROOM = 1.25

Doc = dict[str, Any]


@dataclass(frozen=True)
class Tier:
    name: str
    docs: list[Doc]
    loaded: LoadedConfig

    @property
    def city(self) -> CityConfig:
        return self.loaded.config

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        found = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(d["metadata"]["name"] == name for d in self.all(kind))

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.all(kind)}

    def app_ids(self) -> set[str]:
        return {
            d["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-id"]
            for d in self.all("Deployment")
            if "dapr.io/app-id" in d["spec"]["template"]["metadata"].get("annotations", {})
        }


@pytest.fixture(scope="module", params=TIERS)
def tier(request: pytest.FixtureRequest) -> Tier:
    name = cast(str, request.param)
    docs = [d for d in yaml.safe_load_all(build(name)) if d]
    return Tier(name, docs, load_config(DEPLOY / "overlays" / name / "city.yaml"))


def container(deployment: Doc, name: str | None = None) -> Doc:
    containers: list[Doc] = deployment["spec"]["template"]["spec"]["containers"]
    wanted = name or deployment["metadata"]["name"]
    found = [c for c in containers if c["name"] == wanted]
    assert found, f"Deployment {deployment['metadata']['name']} has no container {wanted}"
    return found[0]


def pod_annotations(deployment: Doc) -> dict[str, str]:
    return cast(dict[str, str], deployment["spec"]["template"]["metadata"].get("annotations", {}))


def mounts(c: Doc) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}


def volumes(pod_spec: Doc) -> dict[str, Doc]:
    return {v["name"]: v for v in pod_spec.get("volumes", [])}


def parse_cli(command: list[str], args: list[str]) -> tuple[str, dict[str, Any]]:
    """The citylake subcommand ``command + args`` names and its parsed options,
    parsed by the CLI itself: an option the code lacks is an error here."""
    assert command == ["citylake"], f"not the citylake command: {command}"
    group: Any = typer.main.get_command(cli_app)
    words = list(args)
    while True:
        name, sub, words = group.resolve_command(group.context_class(group), words)
        assert sub is not None and name is not None, args
        if hasattr(sub, "commands"):  # a group: pipeline, simulate, lake
            group = sub
            continue
        ctx = sub.make_context(name, words)
        return str(name), dict(ctx.params)


def route_paths(app: Any) -> dict[str, str]:
    """Handler name -> path of the app's GET routes, e.g. healthz -> /healthz, read
    from its OpenAPI document (FastAPI's operation ids are name + path + method)."""
    found = {}
    for path, item in app.openapi()["paths"].items():
        for handler in ("healthz", "metrics"):
            if item.get("get", {}).get("operationId") == re.sub(r"\W", "_", f"{handler}{path}") + "_get":
                found[handler] = path
    return found


@functools.cache
def service_routes(service: str) -> dict[str, str]:
    """The routes each service app really has (built, not started)."""
    data_dir = Path("/nonexistent/citylake-deploy-test")
    if service == "query":
        from citylake.services.query.app import QuerySettings
        from citylake.services.query.app import create_app as query_app

        return route_paths(query_app(QuerySettings(data_dir=data_dir)))
    if service == "registry":
        from citylake.services.registry.app import RegistrySettings
        from citylake.services.registry.app import create_app as registry_app

        return route_paths(registry_app(RegistrySettings(data_dir=data_dir, refresh_s=None)))
    from citylake.services.alerts.app import AlertsSettings
    from citylake.services.alerts.app import create_app as alerts_app

    return route_paths(alerts_app(AlertsSettings(data_dir=data_dir, poll_interval_s=None)))


def cpu_m(value: str | float) -> int:
    text = str(value)
    return int(text[:-1]) if text.endswith("m") else round(float(text) * 1000)


def memory_mi(value: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    raise AssertionError(f"memory {value!r}: use Ki/Mi/Gi/Ti")


def flink_memory_mi(value: str) -> float:
    """Flink's MemorySize text: 640m is 640 MiB."""
    match = re.fullmatch(r"(\d+)\s*(m|mb|g|gb)", value.lower())
    assert match, f"Flink memory {value!r}"
    return int(match[1]) * (1024 if match[2].startswith("g") else 1)


def storage_bytes(value: str) -> int:
    return int(memory_mi(value) * 1024 * 1024)


# ---------------------------------------------------------------- build, schema


def test_overlay_builds_into_its_namespace(tier: Tier) -> None:
    namespace = f"citylake-{tier.name}"
    assert tier.names("Namespace") == {namespace}
    for doc in tier.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, (doc["kind"], doc["metadata"]["name"])


def test_kubeconform_strict_offline(tier: Tier) -> None:
    """Every resource validates against the repo's strict schemas; none skipped
    (a kind without a schema is an error, not a skip)."""
    done = kubeconform(build(tier.name), "-summary", "-output", "json")
    report = json.loads(done.stdout)
    problems = [r for r in report.get("resources") or [] if r.get("status") != "statusValid"]
    assert done.returncode == 0 and not problems, json.dumps(problems, indent=1) + done.stderr
    summary = report["summary"]
    assert summary == {"valid": len(tier.docs), "invalid": 0, "errors": 0, "skipped": 0}, summary


def test_schemas_cover_exactly_the_kinds_used() -> None:
    """generate.py keeps only the kinds deploy/ uses: a kind added without its
    schema would fail kubeconform; a schema left behind is dead weight."""
    used = set()
    for name in TIERS:
        for doc in yaml.safe_load_all(build(name)):
            group, _, ver = doc["apiVersion"].rpartition("/")
            suffix = f"-{group.split('.')[0]}-{ver}" if group else f"-{ver}"
            used.add(f"{doc['kind'].lower()}{suffix}.json")
    stored = {p.name for p in (DEPLOY / "schemas").glob("*.json")}
    assert used == stored


# ------------------------------------------------------------------ city.yaml


def test_city_yaml_is_valid_and_is_the_configmap(tier: Tier) -> None:
    from citylake.ingest.registry import build_sources

    # Every source against its adapter's own model, as `citylake ingest` does.
    build_sources(tier.loaded)
    assert tier.city.data_dir == Path("/var/lib/citylake")
    configmaps = [c for c in tier.all("ConfigMap") if c["metadata"]["name"].startswith("citylake-config-")]
    assert len(configmaps) == 1, "one generated citylake-config ConfigMap (hash-suffixed)"
    text = (DEPLOY / "overlays" / tier.name / "city.yaml").read_text()
    assert configmaps[0]["data"] == {"city.yaml": text}
    for service in ServiceName:
        settings = getattr(tier.city.services, service.value)
        # No keys in a ConfigMap: they come from the Secret citylake-keys, mounted as keys_file.
        assert settings.api_keys == [] and settings.read_keys == []
        assert settings.keys_file == Path(f"/etc/citylake-secrets/{service.value}")
    # Every ${NAME} of city.yaml is in the env, from a Secret, of the pods that use it.
    for name in re.findall(r"\$\{([A-Z_][A-Z0-9_]*)\}", text):
        assert tier.has("Deployment", "ingest"), name
        env = {e["name"]: e for e in container(tier.get("Deployment", "ingest")).get("env", [])}
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] in OPERATOR_SECRETS, name


def test_operator_secrets_are_documented_and_never_generated(tier: Tier) -> None:
    readme = (DEPLOY / "README.md").read_text()
    for name, keys in OPERATOR_SECRETS.items():
        assert not tier.has("Secret", name), f"{name} holds credentials: the operator makes it, not git"
        assert f"create secret generic {name}" in readme, name
        for key in keys:
            assert "--from-" in readme and f"{key}=" in readme, (name, key)


def test_services_have_keys_and_dapr_app_tokens(tier: Tier) -> None:
    for service in ServiceName:
        deployment = tier.get("Deployment", service.value)
        assert pod_annotations(deployment)["dapr.io/app-token-secret"] == "citylake-dapr-app-token"
        keys = volumes(deployment["spec"]["template"]["spec"])["keys"]["secret"]
        assert keys["secretName"] == "citylake-keys"
        assert [i["key"] for i in keys["items"]] == [service.value]
        assert mounts(container(deployment))["/etc/citylake-secrets"] == "keys"


def test_every_tier_denies_by_default(tier: Tier) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in tier.all("NetworkPolicy")}
    deny = policies["citylake-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    # What is open to the outside (no `from`): only device-facing ports.
    open_ports = {
        (port["protocol"], port["port"])
        for spec in policies.values()
        for rule in spec.get("ingress", [])
        if "from" not in rule
        for port in rule.get("ports", [])
    }
    devices = {("TCP", 1883), ("UDP", 5060), ("TCP", 5060), ("TCP", 8088)}
    # A receiver's senders are other sites' clusters: its port is open, behind
    # HTTPS and per-site keys (test_sync_runs_where_the_site_command_runs_it).
    receiver = {("TCP", 8090)} if tier.has("Deployment", "sync-serve") else set()
    assert open_ports <= devices | receiver


def test_every_referenced_configmap_claim_and_secret_exists(tier: Tier) -> None:
    pod_specs = [d["spec"]["template"]["spec"] for d in tier.all("Deployment")]
    pod_specs += [f["spec"]["podTemplate"]["spec"] for f in tier.all("FlinkDeployment")]
    for spec in pod_specs:
        for vol in spec.get("volumes", []):
            if "configMap" in vol:
                assert tier.has("ConfigMap", vol["configMap"]["name"]), vol
            if "persistentVolumeClaim" in vol:
                assert tier.has("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]), vol
            if "secret" in vol:
                name = vol["secret"]["secretName"]
                assert tier.has("Secret", name) or name in OPERATOR_SECRETS, vol
                for item in vol["secret"].get("items", []):
                    assert name not in OPERATOR_SECRETS or item["key"] in OPERATOR_SECRETS[name], item


def test_lake_maintenance_runs_at_every_tier(tier: Tier) -> None:
    deployment = tier.get("Deployment", "lake-maintain")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    c = container(deployment)
    name, params = parse_cli(c["command"], c["args"])
    assert name == "maintain" and str(params["config"]) == f"{CONFIG_DIR}/city.yaml" and not params["once"]
    port = params["metrics_port"]
    assert port and params["metrics_host"] == "0.0.0.0"
    assert [p["containerPort"] for p in c["ports"]] == [port]
    assert pod_annotations(deployment)["prometheus.io/port"] == str(port)
    assert "dapr.io/enabled" not in pod_annotations(deployment)  # it calls nothing
    spec = deployment["spec"]["template"]["spec"]
    data = volumes(spec)[mounts(c)[str(tier.city.data_dir)]]
    assert data["persistentVolumeClaim"]["claimName"] == "citylake-lake"
    # The tier's city.yaml builds its tasks (tables and retention known).
    from citylake.lake.maintenance import build_tasks
    from citylake.schemas import DataLayout

    names = [t.name for t in build_tasks(DataLayout(tier.city.data_dir), tier.city.lake)]
    assert names[:2] == ["compact", "vacuum"], names


# --------------------------------------------------------- images and commands


def test_one_image_at_the_package_version(tier: Tier) -> None:
    image = f"citylake:{version('citylake')}"
    for d in tier.all("Deployment"):
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"] + spec.get("initContainers", []):
            assert c["image"] == image, (d["metadata"]["name"], c["name"])
    for f in tier.all("FlinkDeployment"):
        assert f["spec"]["image"] == image


def test_services_match_the_code_and_city_yaml(tier: Tier) -> None:
    configuration = tier.names("Configuration")
    for service in ServiceName:
        settings = getattr(tier.city.services, service.value)
        routes = service_routes(service.value)
        health, metrics = routes["healthz"], routes["metrics"]
        deployment = tier.get("Deployment", service.value)
        c = container(deployment)

        name, params = parse_cli(c["command"], c["args"])
        assert name == "serve" and params["service"] == ServiceName(service.value)
        assert str(params["config"]) == f"{CONFIG_DIR}/city.yaml"
        assert mounts(c)[CONFIG_DIR] == "config"
        # Probes and Prometheus reach the pod's address, not its loopback.
        host = params["host"] or settings.host
        port = params["port"] or settings.port
        assert host == "0.0.0.0", f"{service}: listens on {host}; probes need 0.0.0.0"
        assert port == settings.port

        ports = {p["name"]: p for p in c["ports"]}
        assert ports["http"]["containerPort"] == port and ports["http"]["protocol"] == "TCP"
        for probe in ("readinessProbe", "livenessProbe"):
            assert c[probe]["httpGet"] == {"path": health, "port": "http"}, (service, probe)

        notes = pod_annotations(deployment)
        assert notes["dapr.io/enabled"] == "true"
        assert notes["dapr.io/app-id"] == service.value
        assert notes["dapr.io/app-port"] == str(port)
        assert notes["dapr.io/config"] in configuration
        assert notes["dapr.io/api-token-secret"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == str(port)
        assert notes["prometheus.io/path"] == metrics

        svc = tier.get("Service", service.value)
        assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, "http")]

        pdb = tier.get("PodDisruptionBudget", service.value)
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        # Every service reads the lake at data_dir.
        data = volumes(deployment["spec"]["template"]["spec"])[mounts(c)[str(tier.city.data_dir)]]
        assert data["persistentVolumeClaim"]["claimName"] == "citylake-lake"

        # The query service's DuckDB limit plus the process's own memory fit
        # the container.
        limit = memory_mi(c["resources"]["limits"]["memory"])
        if service is ServiceName.query:
            assert settings.memory_limit_mb + SERVICE_BASELINE_MI <= limit, limit
        assert limit > SERVICE_BASELINE_MI, (service, limit)
        # A service fed by a live topic may use its pub/sub component.
        live = getattr(settings, "live_pubsub", None)
        if live:
            assert service.value in tier.get("Component", live).get("scopes", []), (service, live)


def test_query_autoscales_except_at_the_edge(tier: Tier) -> None:
    query = tier.get("Deployment", "query")
    if tier.name == "edge":
        assert tier.all("HorizontalPodAutoscaler") == []
        return
    hpa = tier.get("HorizontalPodAutoscaler", "query")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "query"}
    assert hpa["spec"]["minReplicas"] >= 2
    # The HPA owns the replica count; a fixed one would fight it on every apply.
    assert "replicas" not in query["spec"]


def listening_ports(tier: Tier) -> set[tuple[int, str]]:
    """(port, protocol) of every source that listens (the others connect out)."""
    from citylake.ingest.registry import build_sources

    found: set[tuple[int, str]] = set()
    for source in build_sources(tier.loaded):
        config: Any = source.config
        if config.type == "gb28181":
            found |= {(config.listen_port, transport.upper()) for transport in config.listen_transports}
        elif config.type == "http_push":
            found.add((urlsplit(config.url).port or 80, "TCP"))
        else:
            assert config.type in {"mqtt", "modbus", "opcua"}, f"does {config.type} listen? teach this test"
    return found


def test_ingest_matches_the_code_and_city_yaml(tier: Tier) -> None:
    if not tier.city.sources:
        assert not tier.has("Deployment", "ingest"), "ingest without sources"
        return
    from citylake.ingest.ops import create_ops_app
    from citylake.ingest.runner import IngestRunner

    deployment = tier.get("Deployment", "ingest")
    c = container(deployment)
    name, params = parse_cli(c["command"], c["args"])
    assert name == "ingest" and str(params["config"]) == f"{CONFIG_DIR}/city.yaml"
    assert not params["source"] and not params["check"]
    metrics_port = params["metrics_port"]
    assert metrics_port
    assert pod_annotations(deployment)["dapr.io/app-port"] == str(metrics_port)
    assert pod_annotations(deployment)["dapr.io/app-id"] == "ingest"

    # ingest's /healthz listens on 127.0.0.1 only: the probes run in the pod.
    health = route_paths(create_ops_app(cast(IngestRunner, None)))["healthz"]
    for probe in ("readinessProbe", "livenessProbe"):
        script = " ".join(c[probe]["exec"]["command"])
        assert f'"http://127.0.0.1:{metrics_port}{health}"' in script, (probe, script)

    declared = {(p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert declared == listening_ports(tier)
    exposed = {(p["port"], p["protocol"]) for s in tier.all("Service") for p in s["spec"]["ports"]}
    assert declared <= exposed
    for s in tier.all("Service"):
        if s["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]:
            # Devices outside the cluster keep their own address.
            assert s["spec"].get("type") == "LoadBalancer" or s["metadata"]["name"] == "http-push"

    # MQTT sources connect to a Service of the tier at its port.
    for source in tier.city.sources:
        if source.type == "mqtt":
            url = urlsplit(source.url)
            svc = tier.get("Service", str(url.hostname))
            assert url.port in [p["port"] for p in svc["spec"]["ports"]]

    spec = deployment["spec"]["template"]["spec"]
    data = volumes(spec)[mounts(c)[str(tier.city.data_dir)]]
    assert data["persistentVolumeClaim"]["claimName"] == "citylake-lake"


def test_edge_landing_zone_has_its_own_volume_above_the_ingest_bound() -> None:
    edge = Tier(
        "edge",
        [d for d in yaml.safe_load_all(build("edge")) if d],
        load_config(DEPLOY / "overlays" / "edge" / "city.yaml"),
    )
    landing = str(edge.city.data_dir / "landing")
    flink = edge.get("FlinkDeployment", "citylake-flink")
    for pod in [
        container(edge.get("Deployment", "ingest")),
        flink["spec"]["podTemplate"]["spec"]["containers"][0],
    ]:
        assert mounts(pod)[landing] == "landing"
    pvc = edge.get("PersistentVolumeClaim", "citylake-landing")
    bound = edge.city.ingest.landing_max_bytes
    assert bound is not None and bound < storage_bytes(pvc["spec"]["resources"]["requests"]["storage"])


# ------------------------------------------------------------------------ Dapr


def local_components() -> Iterator[Doc]:
    for path in sorted((DEPLOY / "dapr" / "components").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not doc["spec"]["type"].startswith("secretstores."):
            yield doc


def test_dapr_components_are_the_kubernetes_flavour_of_the_tested_ones(tier: Tier) -> None:
    from citylake.services.alerts.app import AlertsSettings

    defaults = AlertsSettings(data_dir=Path("."))
    local = {d["metadata"]["name"]: d for d in local_components()}
    assert {defaults.pubsub, defaults.state_store} <= set(local), "the names the code uses"
    assert tier.names("Component") == set(local)
    for name, mine in local.items():
        theirs = tier.get("Component", name)
        for key in ("type", "version", "ignoreErrors"):
            assert theirs["spec"].get(key) == mine["spec"].get(key), (name, key)
        plain = {m["name"]: m.get("value") for m in mine["spec"]["metadata"]}
        assert {m["name"]: m.get("value") for m in theirs["spec"]["metadata"]} == plain
        assert theirs["auth"] == {"secretStore": "kubernetes"}
        for item in theirs["spec"]["metadata"]:
            if "secretKeyRef" in item:
                ref = item["secretKeyRef"]
                if ref["name"] in OPERATOR_SECRETS:
                    assert ref["key"] in OPERATOR_SECRETS[ref["name"]], ref
                    continue
                secret = tier.get("Secret", ref["name"])
                assert base64.b64decode(secret["data"][ref["key"]]), ref
        assert set(theirs.get("scopes", [])) <= tier.app_ids(), name
        assert "alerts" in theirs["scopes"]

    secret = tier.get("Secret", "citylake-dapr")
    # The sidecars' broker URL (with its password) is the operator's; its README example is checked.
    example = re.search(r'dapr-url="([^"]+)"', (DEPLOY / "README.md").read_text())
    assert example is not None, "deploy/README.md shows the dapr-url of citylake-broker"
    broker = urlsplit(example.group(1))
    assert broker.scheme == "tcp" and broker.username == "citylake-dapr"  # as devstack hands it to daprd
    assert broker.port in [p["port"] for p in tier.get("Service", str(broker.hostname))["spec"]["ports"]]
    state = base64.b64decode(secret["data"]["state-db"]).decode()
    assert state.startswith(f"file:{tier.city.data_dir}/")
    alerts = tier.get("Deployment", "alerts")
    assert pod_annotations(alerts)["dapr.io/volume-mounts-rw"] == f"data:{tier.city.data_dir}"

    configuration = tier.get("Configuration", "citylake")
    for scope in configuration["spec"]["secrets"]["scopes"]:
        assert set(scope["allowedSecrets"]) <= tier.names("Secret") | set(OPERATOR_SECRETS)


def service_route_templates() -> set[str]:
    """Every route template the query, registry and alerts apps serve."""
    from citylake.config import ServiceConfig
    from citylake.services.alerts.app import AlertsSettings
    from citylake.services.alerts.app import create_app as alerts_app
    from citylake.services.query.app import QuerySettings
    from citylake.services.query.app import create_app as query_app
    from citylake.services.registry.app import RegistrySettings
    from citylake.services.registry.app import create_app as registry_app

    here = Path(".")
    apps = (
        query_app(QuerySettings(here, ServiceConfig(live_pubsub="citylake-pubsub"))),
        registry_app(RegistrySettings(here)),
        alerts_app(AlertsSettings(here)),
    )
    return {path for app in apps for path in app.openapi()["paths"]}


def test_sidecar_http_metrics_are_labelled_by_route_template_not_by_device(tier: Tier) -> None:
    """daprd's default labels HTTP metrics by full path: a new series of every
    histogram per device asked about (deploy/dapr/config.yaml). Both flavours
    of the Configuration turn that off and name every route of the services,
    so each keeps its own series and nothing else gets one."""
    local = yaml.safe_load((DEPLOY / "dapr" / "config.yaml").read_text())
    theirs = tier.get("Configuration", "citylake")
    assert local["metadata"]["name"] == theirs["metadata"]["name"] == "citylake"
    assert "metric" not in theirs["spec"], "spec.metrics only: daprd merges the two keys"
    assert theirs["spec"]["metrics"] == local["spec"]["metrics"]
    http = local["spec"]["metrics"]["http"]
    assert http["increasedCardinality"] is False
    assert sorted(http["pathMatching"]) == sorted(service_route_templates())
    for template in http["pathMatching"]:
        # Go's ServeMux reads {name} as one path segment, as FastAPI does.
        assert re.fullmatch(r"(/([a-z0-9_]+|\{[a-z_]+\}))+", template), template


def test_resiliency_is_scoped_to_the_services_and_outlasts_their_own_limits(tier: Tier) -> None:
    resiliency = tier.get("Resiliency", "citylake")
    services = {s.value for s in ServiceName}
    assert set(resiliency["scopes"]) == services
    policies = resiliency["spec"]["policies"]
    targets = resiliency["spec"]["targets"]
    assert set(targets["apps"]) == services
    assert set(targets["components"]) == tier.names("Component")

    def seconds(text: str) -> float:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", text)
        assert match, text
        return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]

    for app_id, target in targets["apps"].items():
        assert target["retry"] in policies["retries"]
        assert target["circuitBreaker"] in policies["circuitBreakers"]
        settings = getattr(tier.city.services, app_id)
        own_limit = max(settings.sql_timeout_s, settings.query_timeout_s)
        assert seconds(policies["timeouts"][target["timeout"]]) > own_limit, app_id
    for target in targets["components"].values():
        out = target["outbound"]
        assert out["timeout"] in policies["timeouts"] and out["retry"] in policies["retries"]


# ----------------------------------------------------------------------- Flink


def test_flink_session_cluster_and_jobs_match_the_pipelines(
    tier: Tier, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyflink.version import __version__ as flink_version

    from citylake.pipelines import runner
    from citylake.pipelines.jobs import JOB_NAMES

    flink = tier.get("FlinkDeployment", "citylake-flink")
    spec = flink["spec"]
    conf = spec["flinkConfiguration"]
    assert spec["serviceAccount"] in tier.names("ServiceAccount")
    assert conf["python.client.executable"] == conf["python.executable"] == PYTHON
    assert "FROM python:3.11-slim" in (DEPLOY / "Dockerfile").read_text()
    main = spec["podTemplate"]["spec"]["containers"][0]
    assert main["name"] == "flink-main-container"
    assert mounts(main)[CONFIG_DIR] == "config"
    assert mounts(main)[str(tier.city.data_dir)] == "data"
    assert conf["execution.checkpointing.savepoint-dir"].startswith(f"file://{tier.city.data_dir}/")

    # city.yaml's rest_url is the session cluster's REST Service.
    rest = urlsplit(tier.city.pipelines.flink.rest_url or "")
    assert (rest.hostname, rest.port) == (f"{flink['metadata']['name']}-rest", 8081)

    captured: list[list[str]] = []

    def flink_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        captured.append(command)
        return subprocess.CompletedProcess(command, 0, "Job has been submitted with JobID 0123abcd\n", "")

    monkeypatch.setattr(subprocess, "run", flink_run)
    jobs = tier.all("FlinkSessionJob")
    # Combined (pipelines.combine): one session job names every job, comma-separated.
    names = [
        name
        for j in jobs
        for name in j["spec"]["job"]["args"][j["spec"]["job"]["args"].index("--job") + 1].split(",")
    ]
    assert sorted(names) == sorted(tier.city.pipelines.jobs)
    for session_job in jobs:
        job = session_job["spec"]["job"]
        assert session_job["spec"]["deploymentName"] == flink["metadata"]["name"]
        assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
        jar = f"/org/apache/flink/flink-python/{flink_version}/flink-python-{flink_version}.jar"
        assert job["jarURI"].endswith(jar)
        assert job["parallelism"] == tier.city.pipelines.flink.parallelism
        assert job["upgradeMode"] == "savepoint"
        args = job["args"]
        entry = args[args.index("-py") + 1]
        assert (REPO / Path(entry).relative_to(IMAGE_SOURCE)) == REPO / "pipelines" / "main.py"
        program = args[args.index("--") + 1 :]
        name = program[program.index("--job") + 1]
        mode = program[program.index("--mode") + 1]
        assert all(n in JOB_NAMES for n in name.split(","))
        # What `citylake pipeline submit` hands `flink run --python ... --`.
        captured.clear()
        runner.submit(tier.city, Path(f"{CONFIG_DIR}/city.yaml"), name, mode, "http://unused:8081")
        submitted = captured[0]
        assert Path(submitted[submitted.index("--python") + 1]).name == Path(entry).name
        assert program == submitted[submitted.index("--") + 1 :]


# --------------------------------------------------------------- edge budget


@dataclass(frozen=True)
class Usage:
    what: str
    cpu_request_m: int
    cpu_limit_m: int
    memory_request_mi: float
    memory_limit_mi: float


def edge_usage() -> list[Usage]:
    """Requests and limits of every pod the edge overlay can start at once:
    each container, each Dapr sidecar (from its annotations) and Flink's
    JobManager and as many TaskManagers as the slot limit allows."""
    edge = [d for d in yaml.safe_load_all(build("edge")) if d]
    usage = []
    for d in (d for d in edge if d["kind"] == "Deployment"):
        replicas = d["spec"].get("replicas", 1)
        for c in d["spec"]["template"]["spec"]["containers"]:
            res = c["resources"]
            for _ in range(replicas):
                usage.append(
                    Usage(
                        f"{d['metadata']['name']}/{c['name']}",
                        cpu_m(res["requests"]["cpu"]),
                        cpu_m(res["limits"]["cpu"]),
                        memory_mi(res["requests"]["memory"]),
                        memory_mi(res["limits"]["memory"]),
                    )
                )
        notes = pod_annotations(d)
        if notes.get("dapr.io/enabled") == "true":
            for _ in range(replicas):
                usage.append(
                    Usage(
                        f"{d['metadata']['name']}/daprd",
                        cpu_m(notes["dapr.io/sidecar-cpu-request"]),
                        cpu_m(notes["dapr.io/sidecar-cpu-limit"]),
                        memory_mi(notes["dapr.io/sidecar-memory-request"]),
                        memory_mi(notes["dapr.io/sidecar-memory-limit"]),
                    )
                )
    (flink,) = (d for d in edge if d["kind"] == "FlinkDeployment")
    conf = flink["spec"]["flinkConfiguration"]
    task_managers = int(conf["slotmanager.number-of-slots.max"]) // int(conf["taskmanager.numberOfTaskSlots"])
    for role, count, factor_key in (
        ("jobManager", flink["spec"]["jobManager"]["replicas"], "jobmanager"),
        ("taskManager", task_managers, "taskmanager"),
    ):
        resource = flink["spec"][role]["resource"]
        memory = flink_memory_mi(resource["memory"])
        cpu = cpu_m(resource["cpu"])
        memory_factor = float(conf.get(f"kubernetes.{factor_key}.memory.limit-factor", "1"))
        cpu_factor = float(conf.get(f"kubernetes.{factor_key}.cpu.limit-factor", "1"))
        for _ in range(count):
            usage.append(Usage(f"flink/{role}", cpu, round(cpu * cpu_factor), memory, memory * memory_factor))
    return usage


def test_edge_fits_the_seed_node() -> None:
    usage = edge_usage()
    cpu_requests = sum(u.cpu_request_m for u in usage)
    cpu_limits = sum(u.cpu_limit_m for u in usage)
    memory_requests = sum(u.memory_request_mi for u in usage)
    memory_limits = sum(u.memory_limit_mi for u in usage)
    table = "\n".join(f"{u.what}: {u.cpu_limit_m}m {u.memory_limit_mi:.0f}Mi" for u in usage)
    # Memory is not compressible: every limit reached at once still fits
    # beside what the node keeps for itself. CPU limits never exceed the node;
    # requests leave the reserve free.
    assert memory_limits <= EDGE_MEMORY_MI - EDGE_RESERVED_MEMORY_MI, table
    assert cpu_limits <= EDGE_CPU_M, table
    assert cpu_requests <= EDGE_CPU_M - EDGE_RESERVED_CPU_M, table
    for u in usage:
        assert u.cpu_request_m <= u.cpu_limit_m and u.memory_request_mi <= u.memory_limit_mi, u
    # deploy/README.md states the same totals.
    readme = (DEPLOY / "README.md").read_text()
    totals = " | ".join(
        f"**{v}**"
        for v in (f"{cpu_requests}m", f"{cpu_limits}m", f"{memory_requests:.0f}Mi", f"{memory_limits:.0f}Mi")
    )
    assert f"| **all pods** | {totals} |" in readme, totals


def up_to_8(mi: float) -> int:
    return math.ceil(mi / 8) * 8


def test_edge_sizes_follow_the_measured_peaks() -> None:
    """Every edge container and sidecar but Flink's (sized by Flink's own
    memory model in overlays/edge/flink.yaml) has the request and limit the
    headroom rule gives its measured peak, and deploy/README.md's table states
    the same figures."""
    readme = (DEPLOY / "README.md").read_text()
    sized = [u for u in edge_usage() if not u.what.startswith("flink/")]
    assert {u.what for u in sized} == set(EDGE_PEAK_RSS_MI)
    for u in sized:
        peak = EDGE_PEAK_RSS_MI[u.what]
        request, limit = up_to_8(peak), up_to_8(peak * EDGE_HEADROOM)
        assert (u.memory_request_mi, u.memory_limit_mi) == (request, limit), u
        row = f"| `{u.what}` | {peak:.0f} MiB |"
        assert (
            row in readme and f"| {request}Mi | {limit}Mi |" in readme.split(row, 1)[1].split("\n", 1)[0]
        ), row


def test_edge_pods_run_on_the_sites_node() -> None:
    edge = Tier(
        "edge",
        [d for d in yaml.safe_load_all(build("edge")) if d],
        load_config(DEPLOY / "overlays" / "edge" / "city.yaml"),
    )
    wanted = {"citylake.io/site": edge.city.site}
    for d in edge.all("Deployment"):
        assert d["spec"]["template"]["spec"]["nodeSelector"] == wanted, d["metadata"]["name"]
    flink = edge.get("FlinkDeployment", "citylake-flink")
    assert flink["spec"]["podTemplate"]["spec"]["nodeSelector"] == wanted


# --------------------------------------------------------------- site units

# A `citylake run` unit and the workload that runs it in Kubernetes.
UNIT_WORKLOADS = {
    "ingest": ("Deployment", "ingest"),
    "maintenance": ("Deployment", "lake-maintain"),
    "sync-serve": ("Deployment", "sync-serve"),
    "sync-push": ("Deployment", "sync-push"),
}


def test_every_unit_of_the_site_command_is_a_workload(tier: Tier) -> None:
    from citylake.site import plan_site
    from citylake.site.units import UnitKind

    plan = plan_site(tier.loaded, Path(f"{CONFIG_DIR}/city.yaml"), pick_port=lambda: 1)
    assert not any(u.kind is UnitKind.SIDECAR for u in plan.units)  # the injector's job here
    for unit in plan.units:
        if unit.kind is UnitKind.JOB:
            kind, name = "FlinkSessionJob", unit.name.removeprefix("job-")
            # The same jobs in the unit's command and in the session job's --job.
            session = tier.get(kind, name)["spec"]["job"]["args"]
            assert unit.argv[unit.argv.index("run") + 1] == session[session.index("--job") + 1]
        elif unit.kind is UnitKind.SERVICE:
            kind, name = "Deployment", unit.name
        else:
            kind, name = UNIT_WORKLOADS[unit.name]
        assert tier.has(kind, name), f"{tier.name}: unit {unit.name} has no {kind} {name}"
    # ...and every citylake workload is a unit of the plan.
    planned = {u.name for u in plan.units}
    for deployment in tier.names("Deployment") - {"mosquitto"}:
        unit_name = {"lake-maintain": "maintenance"}.get(deployment, deployment)
        assert unit_name in planned, f"{tier.name}: Deployment {deployment} is no unit of `citylake run`"
    for job in tier.names("FlinkSessionJob"):
        assert job in planned or f"job-{job}" in planned


def test_sync_runs_where_the_site_command_runs_it(tier: Tier) -> None:
    """Edge pushes, region serves and pushes, centre serves: each with the
    files its city.yaml names mounted from the operator's Secrets, and a
    receiver only over HTTPS with keys."""
    sync = tier.loaded.config.sync
    expected = {"edge": {"sync-push"}, "region": {"sync-push", "sync-serve"}, "centre": {"sync-serve"}}
    assert {n for n in tier.names("Deployment") if n.startswith("sync-")} == expected[tier.name]
    if tier.has("Deployment", "sync-push"):
        push = tier.get("Deployment", "sync-push")
        assert container(push)["args"][:3] == ["sync", "push", "--follow"]
        assert sync.region_url is not None and sync.region_url.startswith("https://")
        mounted = mounts(container(push))
        assert mounted["/etc/citylake-sync"] == "sync"
        assert sync.api_key_file == Path("/etc/citylake-sync/key")
        assert sync.region_ca_file == Path("/etc/citylake-sync/ca.crt")
    if tier.has("Deployment", "sync-serve"):
        serve = tier.get("Deployment", "sync-serve")
        args = container(serve)["args"]
        assert args[:2] == ["sync", "serve"] and args[args.index("--port") + 1] == str(sync.port)
        assert sync.host == "0.0.0.0" and sync.tls_cert_file and sync.tls_key_file and sync.keys_file
        assert mounts(container(serve))["/etc/citylake-sync-receiver"] == "receiver"
        assert {p["port"] for p in tier.get("Service", "sync")["spec"]["ports"]} == {sync.port}
        assert tier.loaded.config.run.sync_serve
