"""Runs a job on Flink's embedded mini-cluster, or submits it to a session
cluster with Flink's own ``flink run -py``."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment, TableResult

from citylake.config import CityConfig, FlinkConfig
from citylake.lake.registry import register
from citylake.pipelines.catalog import job_catalog
from citylake.pipelines.gateway import ensure_live_gateway
from citylake.pipelines.jars import pipeline_jars
from citylake.pipelines.jobs import JobSet, PlannedJob
from citylake.pipelines.lake_inputs import LakeInputRefused, lake_input_specs, link_snapshot, new_run_dir
from citylake.pipelines.tables import (
    Mode,
    lake_input_source_ddl,
    lake_sink_ddl,
    landing_source_ddl,
    landing_view_ddl,
)
from citylake.pipelines.user_jobs import UserJob
from citylake.schemas import DataLayout

log = logging.getLogger(__name__)


# Written beside a combined run's checkpoints: which jobs its state holds.
JOB_SET_FILE = "job-set.json"


class JobSetChanged(RuntimeError):
    """The combined state on disk belongs to another set of jobs."""


def table_environment(config: CityConfig, job_name: str, mode: Mode) -> TableEnvironment:
    ensure_live_gateway()
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
    # The mini-cluster's TaskManager, laid out like the edge's session
    # TaskManager (deploy/overlays/edge/flink.yaml) instead of Flink's local
    # defaults: hashmap state lives on the heap, so managed memory (RocksDB,
    # batch sorts and hash tables) and network buffers only need a little.
    for key, value in local_memory_options(flink, mode).items():
        conf.set(key, value)
    return t_env


def local_memory_options(flink: FlinkConfig, mode: Mode) -> dict[str, str]:
    """Memory of the embedded TaskManager (ignored by a session cluster,
    which has its own). Batch operators sort and join in managed memory and
    spill beyond it, so a backfill gets more of it."""
    managed = flink.local_managed_mb if mode == "streaming" else max(flink.local_managed_mb, 256)
    return {
        "state.backend.type": "hashmap",
        "taskmanager.memory.managed.size": f"{managed}m",
        "taskmanager.memory.network.min": f"{flink.local_network_mb}m",
        "taskmanager.memory.network.max": f"{flink.local_network_mb}m",
    }


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
    the_job: PlannedJob | JobSet,
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
    lake_inputs = sorted({n for j in _user_jobs(the_job) for n in j.config.lake_inputs})
    if lake_inputs:
        if mode == "streaming":
            raise LakeInputRefused(
                f"lake inputs ({', '.join(lake_inputs)}) are read in batch mode only: a streaming scan "
                "of the lake would read each compaction's output as new rows; run with --mode batch "
                "(with --from/--to for a range), or read the landing table as `inputs`"
            )
        sinks = {spec.name for spec in the_job.outputs}
        if sinks & set(lake_inputs):
            raise LakeInputRefused(
                f"{', '.join(sorted(sinks & set(lake_inputs)))}: a run cannot read a lake table it writes"
            )
        run_dir = new_run_dir(layout, the_job.key if isinstance(the_job, JobSet) else the_job.name)
        for spec in lake_input_specs(layout, lake_inputs):
            t_env.execute_sql(lake_input_source_ddl(spec, link_snapshot(layout, spec, run_dir)))
            t_env.execute_sql(landing_view_ddl(spec, time_range, prefix="lake"))
    for spec in the_job.outputs:
        t_env.execute_sql(lake_sink_ddl(spec, layout, flink))


def _user_jobs(the_job: PlannedJob | JobSet) -> list[UserJob]:
    jobs = the_job.jobs if isinstance(the_job, JobSet) else [the_job]
    return [j for j in jobs if isinstance(j, UserJob)]


def start(
    config: CityConfig,
    jobs: str | JobSet,
    mode: Mode,
    continuous: bool = True,
    time_range: tuple[datetime, datetime] | None = None,
    resume_from: Path | None = None,
) -> TableResult:
    """Build and launch the job (or the jobs of a set, as one Flink job);
    returns at once with its ``TableResult``.

    ``continuous=False`` runs streaming mode over what has landed and ends (the
    same operators, watermarks and state as a live job): how tests hold both
    modes to the same input. ``time_range`` limits the input to ``[from, to)``."""
    job_set = job_catalog(config).job_set(jobs) if isinstance(jobs, str) else jobs
    t_env = table_environment(config, job_set.key, mode)
    if len(job_set.names) > 1:
        t_env.get_config().set("pipeline.name", f"citylake-{'+'.join(job_set.names)}-{mode}")
    if resume_from is not None:
        t_env.get_config().set("execution.state-recovery.path", resume_from.as_uri())
    declare_tables(t_env, config, job_set, mode, continuous, time_range)
    statements = t_env.create_statement_set()
    for the_job in job_set.jobs:
        if isinstance(the_job, UserJob):
            # In the lake's log before the first file: readers list the table
            # from now on, and a changed schema is refused here at the latest.
            for registration in the_job.registrations:
                register(DataLayout(config.data_dir), registration)
        for name, result in the_job.transform(t_env, config).items():
            statements.add_insert(f"lake_{name}", result)
    if mode == "streaming" and len(job_set.names) > 1:
        record_job_set(config, job_set)
    return statements.execute()


def job_set_file(config: CityConfig, key: str) -> Path:
    return DataLayout(config.data_dir).checkpoints / key / JOB_SET_FILE


def record_job_set(config: CityConfig, job_set: JobSet) -> None:
    path = job_set_file(config, job_set.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps({"jobs": list(job_set.names)}), "utf-8")
    temporary.replace(path)


def prepare_state(config: CityConfig, job_set: JobSet, fresh: bool) -> None:
    """Before a streaming run: a resume must find state of the same job set;
    a fresh combined run moves the old state aside (kept, never deleted), so
    a crash before its first checkpoint cannot resume from the old set's."""
    if not fresh:
        check_job_set(config, job_set)
        return
    if len(job_set.names) > 1:
        stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"
        for root in (
            DataLayout(config.data_dir).checkpoints / job_set.key,
            config.data_dir / "savepoints" / job_set.key,
        ):
            if root.exists():
                aside = root.with_name(f"{root.name}.before-{stamp}")
                root.rename(aside)
                log.info("--fresh: the earlier combined state moved to %s", aside)


def check_job_set(config: CityConfig, job_set: JobSet) -> None:
    """Refuse to resume a combined run's state with another set of jobs.

    Flink hashes each operator's id over the whole graph, so a plan with a job
    added or removed maps none of the old state: resumed, it would fail to
    start (or, allowed to drop state, read every landing file again and write
    their rows twice)."""
    path = job_set_file(config, job_set.key)
    if len(job_set.names) == 1 or not path.exists():
        return
    recorded = tuple(json.loads(path.read_text("utf-8"))["jobs"])
    if recorded == job_set.names:
        return
    raise JobSetChanged(
        f"the combined streaming job's state ({path.parent}) belongs to the jobs "
        f"{', '.join(recorded)}, not {', '.join(job_set.names)}: Flink ties operator state to the "
        "whole plan, so a changed job set cannot resume from it. Either put pipelines.jobs back to "
        f"{list(recorded)}, or let the old set's lake catch up, stop it and start the new set with "
        "--fresh (it then reads every landing file still kept again: rows already in the lake "
        "are written twice unless the landing zone was collected first, `citylake lake gc-landing`)."
    )


def run(
    config: CityConfig,
    jobs: str | JobSet,
    mode: Mode,
    time_range: tuple[datetime, datetime] | None = None,
    fresh: bool = False,
) -> None:
    """Run to the end (batch) or until interrupted (streaming), cancelling the
    Flink job on the way out so no mini-cluster outlives the command. A
    streaming run resumes from the newest checkpoint an earlier run left (after
    a crash or Ctrl-C): files already read are not read again, lake files
    pending at that checkpoint are committed, nothing is lost or doubled."""
    job_set = job_catalog(config).job_set(jobs) if isinstance(jobs, str) else jobs
    if mode == "streaming":
        prepare_state(config, job_set, fresh)
    resume_from = None if fresh or mode != "streaming" else latest_checkpoint(config, job_set.key)
    if resume_from is not None:
        log.info("resuming %s from checkpoint %s", "+".join(job_set.names), resume_from)
    result = start(config, job_set, mode, time_range=time_range, resume_from=resume_from)
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
    job_catalog(config, config_path).job_set(job_name.split(","))  # a wrong name fails before a JVM starts
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
