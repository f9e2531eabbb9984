"""Runs a job on Flink's embedded mini-cluster, or submits it to a session
cluster with Flink's own ``flink run -py``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment, TableResult

from citylake.config import CityConfig
from citylake.pipelines.jars import pipeline_jars
from citylake.pipelines.jobs import Job, job
from citylake.pipelines.tables import Mode, lake_sink_ddl, landing_source_ddl, landing_view_ddl
from citylake.schemas import DataLayout

log = logging.getLogger(__name__)


def table_environment(config: CityConfig, job_name: str, mode: Mode) -> TableEnvironment:
    settings = (
        EnvironmentSettings.in_streaming_mode()
        if mode == "streaming"
        else EnvironmentSettings.in_batch_mode()
    )
    t_env = TableEnvironment.create(settings)
    layout = DataLayout(config.data_dir)
    flink = config.pipelines.flink
    conf = t_env.get_config()
    conf.set("pipeline.name", f"citylake-{job_name}-{mode}")
    conf.set("pipeline.jars", ";".join(p.as_uri() for p in pipeline_jars()))
    conf.set("parallelism.default", str(flink.parallelism))
    # Partition dates and windows are UTC days, wherever the cluster runs.
    conf.set("table.local-time-zone", "UTC")
    # Deduplication state: a key is remembered for the dedupe window, no longer.
    conf.set("table.exec.state.ttl", f"{int(flink.dedupe_window_s * 1000)} ms")
    if mode == "streaming":
        conf.set("execution.checkpointing.interval", f"{int(flink.checkpoint_interval_s * 1000)} ms")
        conf.set("execution.checkpointing.dir", (layout.checkpoints / job_name).as_uri())
        # Kept after a crash or a cancel, so the next run can resume from them.
        conf.set("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION")
        conf.set("execution.checkpointing.num-retained", "3")
    return t_env


def latest_checkpoint(config: CityConfig, job_name: str) -> Path | None:
    """The newest complete checkpoint any earlier run of ``job_name`` left
    (``checkpoints/<job>/<flink job id>/chk-N/_metadata``)."""
    root = DataLayout(config.data_dir).checkpoints / job_name
    complete = [m.parent for m in root.glob("*/chk-*/_metadata")] if root.exists() else []
    return (
        max(complete, key=lambda p: (p.stat().st_mtime, int(p.name.removeprefix("chk-"))))
        if complete
        else None
    )


def declare_tables(
    t_env: TableEnvironment,
    config: CityConfig,
    the_job: Job,
    mode: Mode,
    continuous: bool = True,
    time_range: tuple[datetime, datetime] | None = None,
) -> None:
    layout = DataLayout(config.data_dir)
    flink = config.pipelines.flink
    for spec in the_job.inputs:
        # A streaming job may start before ingest has landed anything; Flink's
        # directory monitor needs the directory to exist.
        layout.landing(spec).mkdir(parents=True, exist_ok=True)
        t_env.execute_sql(landing_source_ddl(spec, layout, mode, flink, continuous))
        t_env.execute_sql(landing_view_ddl(spec, time_range))
    for spec in the_job.outputs:
        t_env.execute_sql(lake_sink_ddl(spec, layout, flink))


def start(
    config: CityConfig,
    job_name: str,
    mode: Mode,
    continuous: bool = True,
    time_range: tuple[datetime, datetime] | None = None,
    resume_from: Path | None = None,
) -> TableResult:
    """Build and launch the job; returns at once with its ``TableResult``.

    ``continuous=False`` runs streaming mode over what has landed and ends (the
    same operators, watermarks and state as a live job): how tests hold both
    modes to the same input. ``time_range`` limits the input to ``[from, to)``."""
    the_job = job(job_name)
    t_env = table_environment(config, job_name, mode)
    if resume_from is not None:
        t_env.get_config().set("execution.state-recovery.path", resume_from.as_uri())
    declare_tables(t_env, config, the_job, mode, continuous, time_range)
    statements = t_env.create_statement_set()
    for name, result in the_job.module.transform(t_env, config).items():
        statements.add_insert(f"lake_{name}", result)
    return statements.execute()


def run(
    config: CityConfig,
    job_name: str,
    mode: Mode,
    time_range: tuple[datetime, datetime] | None = None,
    fresh: bool = False,
) -> None:
    """Run to the end (batch) or until interrupted (streaming), cancelling the
    Flink job on the way out so no mini-cluster outlives the command. A
    streaming run resumes from the newest checkpoint an earlier run left (after
    a crash or Ctrl-C): files already read are not read again, lake files
    pending at that checkpoint are committed, nothing is lost or doubled."""
    resume_from = None if fresh or mode != "streaming" else latest_checkpoint(config, job_name)
    if resume_from is not None:
        log.info("resuming %s from checkpoint %s", job_name, resume_from)
    result = start(config, job_name, mode, time_range=time_range, resume_from=resume_from)
    client = result.get_job_client()
    try:
        result.wait()
    except KeyboardInterrupt:
        if client is not None:
            log.info("cancelling Flink job %s", client.get_job_id())
            client.cancel().result()
        raise


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).parent


def submit(
    config: CityConfig,
    config_path: Path,
    job_name: str,
    mode: Mode,
    rest_url: str,
    from_savepoint: str | None = None,
    time_range: tuple[datetime, datetime] | None = None,
    rules_from: str | None = None,
) -> str:
    """Submit detached to a session cluster; returns Flink's job id. ``main.py``
    plans the job on the client side, so ``time_range`` and ``rules_from`` travel
    as its arguments."""
    job(job_name)  # fail fast on a wrong name, before starting a JVM
    extra = [*(["--rules-from", rules_from] if rules_from else [])]
    if time_range is not None:
        extra += ["--from", time_range[0].isoformat(), "--to", time_range[1].isoformat()]
    entry = Path(__file__).with_name("main.py")
    address = rest_url.removeprefix("http://").removeprefix("https://").rstrip("/")
    command = [
        "bash",
        str(flink_home() / "bin" / "flink"),
        "run",
        "--detached",
        *(["--fromSavepoint", from_savepoint] if from_savepoint else []),
        "--jobmanager",
        address,
        "--python",
        str(entry),
        "--pyExecutable",
        sys.executable,
        "--",
        "--job",
        job_name,
        "--mode",
        mode,
        "--config",
        str(config_path),
        *extra,
    ]
    env = {**os.environ, "PYFLINK_CLIENT_EXECUTABLE": sys.executable, "FLINK_HOME": str(flink_home())}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(
            f"flink run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    for line in done.stdout.splitlines():
        if "JobID" in line:
            return line.rsplit(" ", 1)[-1].strip()
    raise RuntimeError(f"flink run printed no JobID:\n{done.stdout[-3000:]}")
