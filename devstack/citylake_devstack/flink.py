"""Flink's own standalone session cluster, from the apache-flink package's bin/.

The same scripts a city runs on a VM (``start-cluster.sh`` / ``stop-cluster.sh``),
pointed at a generated configuration with free ports, so jobs can be submitted
with ``flink run --python`` exactly as in production.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from ruamel.yaml import YAML

from citylake_devstack.process import ComponentUnavailable, free_port


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


@dataclass
class FlinkSessionCluster:
    workdir: Path
    rest_port: int = field(default_factory=free_port)
    slots: int = 2

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        return self.workdir / "conf"

    def _env(self) -> dict[str, str]:
        if shutil.which("java") is None and "JAVA_HOME" not in os.environ:
            raise ComponentUnavailable("java not found; install openjdk-17-jre-headless (make setup)")
        return {
            **os.environ,
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.workdir / "log"),
            "FLINK_PID_DIR": str(self.workdir / "pid"),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        }

    def write_config(self) -> None:
        home = flink_home()
        for directory in (self.conf_dir, self.workdir / "log", self.workdir / "pid"):
            directory.mkdir(parents=True, exist_ok=True)
        for item in (home / "conf").iterdir():
            if item.name != "config.yaml":
                shutil.copy(item, self.conf_dir / item.name)
        yaml = YAML()
        base = yaml.load((home / "conf" / "config.yaml").read_text())
        java_opts = base["env"]["java"]["opts"]["all"]
        config = {
            "env.java.opts.all": java_opts,
            "env.pid.dir": str(self.workdir / "pid"),
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": free_port(),
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.rpc.port": free_port(),
            "taskmanager.data.port": free_port(),
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "2048m",
            "blob.server.port": free_port(),
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.rest_port,
            "parallelism.default": 1,
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
        }
        with open(self.conf_dir / "config.yaml", "w") as handle:
            yaml.dump(config, handle)
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n")

    def start(self, timeout_s: float = 90) -> FlinkSessionCluster:
        self.write_config()
        done = subprocess.run(
            ["bash", str(flink_home() / "bin" / "start-cluster.sh")],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise ComponentUnavailable(f"start-cluster.sh failed: {done.stdout}{done.stderr}")
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                overview = httpx.get(f"{self.rest_url}/overview", timeout=2).json()
                if overview.get("taskmanagers", 0) >= 1:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.5)
        logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in (self.workdir / "log").glob("*.log"))
        self.stop()
        raise ComponentUnavailable(
            f"Flink session cluster not ready on {self.rest_url} after {timeout_s}s:\n{logs}"
        )

    def jobs(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.rest_url}/jobs/overview", timeout=5).json()["jobs"])

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(flink_home() / "bin" / "stop-cluster.sh")],
            env=self._env(),
            capture_output=True,
            timeout=120,
            check=False,
        )

    def __enter__(self) -> FlinkSessionCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
