"""A real Kubernetes API server (kube-apiserver over etcd) on free ports on
127.0.0.1, for validating deploy/ with ``kubectl apply --dry-run=server``.

No controllers, scheduler or kubelet: the server stores, validates, defaults
and admits objects, which is what a server-side dry run asks of it. The
binaries come from tools/setup/k8s-apiserver.sh (``.cache/bin``); a missing
one raises ``ComponentUnavailable`` with that hint.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from citylake.pipelines.jars import cache_dir
from citylake_devstack.process import ComponentUnavailable, ManagedProcess, free_port, require_port_free

REPO_ROOT = Path(__file__).resolve().parents[2]
# The releases deploy/schemas/ were generated from; the setup script reads the
# same file, so the server validates against what kubeconform checks offline.
SCHEMA_SOURCES = REPO_ROOT / "deploy" / "schemas" / "SOURCES"
# kube-apiserver's ready checks include its post-start hooks (RBAC bootstrap,
# priority-and-fairness config): ~10-20 s on 2 busy cores.
READY_TIMEOUT_S = 120.0
# Every kubectl call here is a handful of requests to a local server; a call
# that takes longer is hung, not slow.
KUBECTL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class SchemaSources:
    kubernetes: str
    dapr: str
    flink_operator: str


def schema_sources(path: Path = SCHEMA_SOURCES) -> SchemaSources:
    """The versions named in deploy/schemas/SOURCES."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "k8s.io/kubernetes":
            found["kubernetes"] = words[1].removeprefix("v")
        elif words[0] == "github.com/dapr/dapr":
            found["dapr"] = words[1].removeprefix("v")
        elif words[0].startswith("org.apache.flink:flink-kubernetes-operator-api:"):
            found["flink_operator"] = words[0].rsplit(":", 1)[1]
    missing = {"kubernetes", "dapr", "flink_operator"} - found.keys()
    if missing:
        raise ValueError(f"{path}: no version for {', '.join(sorted(missing))}")
    return SchemaSources(**found)


def kube_binary(name: str) -> Path:
    """``.cache/bin/<name>``: kube-apiserver, kubectl or etcd."""
    path = cache_dir() / "bin" / name
    if not path.exists():
        raise ComponentUnavailable(
            f"{name} not found at {path}; run `make setup` (tools/setup/k8s-apiserver.sh builds it)"
        )
    return path


def crd_files(sources: SchemaSources) -> list[Path]:
    """The cached Dapr and Flink operator CRDs (tools/setup/k8s-apiserver.sh)."""
    root = cache_dir() / "k8s-crds"
    dapr = root / f"dapr-{sources.dapr}"
    flink = root / f"flink-kubernetes-operator-{sources.flink_operator}"
    for folder in (dapr, flink):
        if not (folder / ".done").exists():
            raise ComponentUnavailable(
                f"CRDs not found in {folder}; run `make setup` (tools/setup/k8s-apiserver.sh fetches them)"
            )
    return sorted(dapr.glob("*.yaml")) + sorted(flink.glob("*.yml"))


def _service_account_keys(private: Path, public: Path) -> None:
    """The key pair the server signs service-account tokens with and checks
    them against: required by kube-apiserver even when no token is issued."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass
class KubeApiServer:
    etcd: ManagedProcess
    apiserver: ManagedProcess
    port: int
    kubeconfig: Path
    cache_dir: Path  # kubectl's discovery cache: private, not ~/.kube

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubectl(
        self, *args: str, input: str | None = None, timeout_s: float = KUBECTL_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl ARGS`` against this server; the caller checks the result."""
        return subprocess.run(
            [
                str(kube_binary("kubectl")),
                "--kubeconfig",
                str(self.kubeconfig),
                "--cache-dir",
                str(self.cache_dir),
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
        )

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()


def start_kube_apiserver(workdir: Path) -> KubeApiServer:
    """etcd and kube-apiserver under ``workdir``, waited for on /readyz.

    Authentication is one static token; authorization is AlwaysAllow (nothing
    here tests RBAC); admission is the server's default plugin set, so
    NamespaceLifecycle, LimitRanger, ServiceAccount and the rest run as in a
    cluster. The serving certificate is the self-signed one kube-apiserver
    writes into its --cert-dir, which the kubeconfig then trusts.
    """
    apiserver_bin, etcd_bin = kube_binary("kube-apiserver"), kube_binary("etcd")
    kube_binary("kubectl")
    workdir.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, port = free_port(), free_port(), free_port()
    for p, what in ((etcd_port, "etcd"), (peer_port, "etcd peer"), (port, "kube-apiserver")):
        require_port_free(p, what)

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = ManagedProcess(
        "etcd",
        [
            str(etcd_bin),
            "--name",
            "citylake-test",
            "--data-dir",
            str(workdir / "etcd"),
            "--listen-client-urls",
            etcd_url,
            "--advertise-client-urls",
            etcd_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"citylake-test={peer_url}",
            # A throwaway store for one test session: fsync buys nothing here.
            "--unsafe-no-fsync",
            "--log-level",
            "warn",
        ],
        workdir / "etcd.log",
    ).start()
    try:
        etcd.wait_port(etcd_port, 30)

        token = secrets.token_hex(16)
        tokens = workdir / "tokens.csv"
        tokens.write_text(f'{token},citylake-test,citylake-test,"system:masters"\n')
        tokens.chmod(0o600)
        sa_key, sa_pub = workdir / "service-account.key", workdir / "service-account.pub"
        _service_account_keys(sa_key, sa_pub)
        cert_dir = workdir / "certs"
        apiserver = ManagedProcess(
            "kube-apiserver",
            [
                str(apiserver_bin),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(port),
                "--cert-dir",
                str(cert_dir),
                "--token-auth-file",
                str(tokens),
                "--authorization-mode",
                "AlwaysAllow",
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(sa_pub),
                "--service-account-signing-key-file",
                str(sa_key),
                # Where Service cluster IPs would come from; none is reachable
                # or routed, the allocator only needs a range.
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--profiling=false",
            ],
            workdir / "kube-apiserver.log",
        ).start()
    except BaseException:
        etcd.stop()
        raise
    try:
        ca = cert_dir / "apiserver.crt"
        headers = {"Authorization": f"Bearer {token}"}

        def ready() -> bool:
            if not ca.exists():
                return False
            try:
                tls = ssl.create_default_context(cafile=str(ca))
                url = f"https://127.0.0.1:{port}/readyz"
                return httpx.get(url, headers=headers, verify=tls, timeout=2).status_code == 200
            except (httpx.HTTPError, ssl.SSLError):
                return False

        apiserver.wait_until(ready, READY_TIMEOUT_S, "/readyz 200")
        kubeconfig = workdir / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "citylake-test",
                            "cluster": {
                                "server": f"https://127.0.0.1:{port}",
                                "certificate-authority": str(ca),
                            },
                        }
                    ],
                    "users": [{"name": "citylake-test", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "citylake-test",
                            "context": {"cluster": "citylake-test", "user": "citylake-test"},
                        }
                    ],
                    "current-context": "citylake-test",
                }
            )
        )
        kubeconfig.chmod(0o600)
    except BaseException:
        apiserver.stop()
        etcd.stop()
        raise
    return KubeApiServer(etcd, apiserver, port, kubeconfig, workdir / "kubectl-cache")
