"""Writes the JSON schemas kubeconform validates deploy/ against, offline.

kubeconform fetches its schemas from GitHub, which city sites and CI cannot
reach, so the schemas of the kinds citylake uses are kept here, generated from
sources the package registries serve (generate.sh fetches them):

- Kubernetes kinds: the OpenAPI v3 spec in the k8s.io/kubernetes Go module
  (api/openapi-spec/v3/*.json);
- Dapr kinds: the CRDs in the github.com/dapr/dapr Go module
  (charts/dapr/crds/*.yaml), at the release tools/setup/daprd.sh builds;
- Flink operator kinds: the CRDs inside the flink-kubernetes-operator-api jar
  on Maven Central (META-INF/fabric8/*-v1.yml).

Each schema is made standalone ($refs inlined) and strict, as kubeconform's
own openapi2jsonschema does for its "-strict" schemas: an object that lists
its properties allows no others, unless it says it preserves unknown fields.
Descriptions are dropped (they do not validate anything and triple the size).
Files are named as kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json`
template expects: deployment-apps-v1.json, component-dapr-v1alpha1.json.

Usage: python generate.py --k8s-openapi DIR --dapr-crds DIR --flink-operator-jar JAR --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

# (group, version, kind) of every Kubernetes kind deploy/ uses.
KUBERNETES_KINDS = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Namespace"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "Secret"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("apps", "v1", "Deployment"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io", "v1", "Role"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
]
DAPR_CRDS = {
    "components.yaml": "Component",
    "configuration.yaml": "Configuration",
    "resiliency.yaml": "Resiliency",
}
FLINK_CRDS = ["flinkdeployments.flink.apache.org-v1.yml", "flinksessionjobs.flink.apache.org-v1.yml"]

# The newest flink-kubernetes-operator-api on Maven Central is 1.10.0, whose
# FlinkVersion enum ends at v1_20. citylake runs Flink 2.3, which operators from
# 1.11 on manage as `v2_0` (their first 2.x value). This is the one edit made to
# a source schema; everything else is the 1.10.0 CRD as published.
FLINK_VERSIONS_ADDED = ["v2_0"]

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def spec_file(group: str, version: str) -> str:
    if not group:
        return f"api__{version}_openapi.json"
    return f"apis__{group}__{version}_openapi.json"


def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json."""
    suffix = f"-{group.split('.', maxsplit=1)[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


class Inliner:
    """Inlines ``#/components/schemas/...`` references of one OpenAPI v3 document."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def resolve(self, node: Any, trail: tuple[str, ...] = ()) -> Any:
        if isinstance(node, list):
            return [self.resolve(item, trail) for item in node]
        if not isinstance(node, dict):
            return node
        node = dict(node)
        # {"allOf": [{"$ref": X}], "default": ...}: how v3 wraps a reference.
        if "allOf" in node and len(node["allOf"]) == 1 and "$ref" in node["allOf"][0]:
            node.update(node.pop("allOf")[0])
        if "$ref" in node:
            name = node.pop("$ref").removeprefix("#/components/schemas/")
            if name in trail:
                raise ValueError(f"recursive schema {' -> '.join((*trail, name))}: cannot inline")
            target = self.resolve(self.schemas[name], (*trail, name))
            return {**target, **{k: v for k, v in node.items() if k == "default"}}
        return {key: self.resolve(value, trail) for key, value in node.items()}


def strict(node: Any) -> Any:
    """Drop descriptions; forbid unlisted properties; int-or-string as oneOf."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if k != "description"}
    if "properties" in node:
        # "properties" of a schema is a map of names, not a schema: keep every name.
        out["properties"] = {name: strict(sub) for name, sub in node["properties"].items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("anyOf", None)
        out.pop("type", None)
        out["oneOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def kubernetes_schema(openapi_dir: Path, group: str, version: str, kind: str) -> dict[str, Any]:
    document = json.loads((openapi_dir / spec_file(group, version)).read_text())
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if (gvk["group"], gvk["version"], gvk["kind"]) == (group, version, kind):
                resolved: dict[str, Any] = Inliner(schemas).resolve(schema, (name,))
                return resolved
    raise LookupError(f"{group}/{version} {kind} not in {spec_file(group, version)}")


def object_meta(openapi_dir: Path) -> dict[str, Any]:
    schemas = json.loads((openapi_dir / spec_file("", "v1")).read_text())["components"]["schemas"]
    meta: dict[str, Any] = Inliner(schemas).resolve(schemas[OBJECT_META], (OBJECT_META,))
    return meta


def crd_schemas(crd: dict[str, Any], meta: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Each served version's openAPIV3Schema, its root given the full ObjectMeta
    (a CRD says only `metadata: {type: object}`; the API server checks the rest)."""
    spec = crd["spec"]
    found = {}
    for version in spec["versions"]:
        schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
        properties = schema.setdefault("properties", {})
        properties["apiVersion"] = {"type": "string"}
        properties["kind"] = {"type": "string"}
        properties["metadata"] = copy.deepcopy(meta)
        found[(spec["group"], version["name"], spec["names"]["kind"])] = schema
    return found


def add_flink_versions(schema: dict[str, Any]) -> None:
    enum = schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"]
    enum.extend(v for v in FLINK_VERSIONS_ADDED if v not in enum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--k8s-openapi", type=Path, required=True, help="k8s.io/kubernetes api/openapi-spec/v3"
    )
    parser.add_argument("--dapr-crds", type=Path, required=True, help="github.com/dapr/dapr charts/dapr/crds")
    parser.add_argument("--flink-operator-jar", type=Path, required=True, help="operator-api jar")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    out: dict[str, dict[str, Any]] = {}
    for group, version, kind in KUBERNETES_KINDS:
        out[file_name(group, version, kind)] = kubernetes_schema(args.k8s_openapi, group, version, kind)
    meta = object_meta(args.k8s_openapi)
    for crd_file, kind in DAPR_CRDS.items():
        for crd in yaml.safe_load_all((args.dapr_crds / crd_file).read_text()):
            if crd and crd.get("kind") == "CustomResourceDefinition":
                for (group, version, found_kind), schema in crd_schemas(crd, meta).items():
                    assert found_kind == kind, (crd_file, found_kind)
                    out[file_name(group, version, kind)] = schema
    with zipfile.ZipFile(args.flink_operator_jar) as jar:
        for name in FLINK_CRDS:
            crd = yaml.safe_load(jar.read(f"META-INF/fabric8/{name}"))
            for (group, version, kind), schema in crd_schemas(crd, meta).items():
                if kind == "FlinkDeployment":
                    add_flink_versions(schema)
                out[file_name(group, version, kind)] = schema

    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.json"):
        if stale.name not in out:
            stale.unlink()
    for name, schema in sorted(out.items()):
        text = json.dumps(strict(schema), indent=1, sort_keys=True) + "\n"
        (args.out / name).write_text(text)
        sys.stdout.write(f"{name}: {len(text) // 1024} KiB\n")


if __name__ == "__main__":
    main()
