"""The streaming ``alerts`` job, following its rules as they change.

A rule set is planned into the job as literals (``rule.sql``), so a new rule
set needs a new plan. This loop runs the job planned from the source's rules,
asks the source again every ``poll_s``, and when the rules differ stops the
job with a savepoint and starts the new plan from it. Every rule set gives
the same operator graph, so the new job takes over all the state of the old
one: the files already read (nothing is read twice or skipped), the dedupe
keys, the readings each key last saw and the alerts open at the stop. A rule
applies to readings the job reads after it took effect; readings read before
are backfilled with ``citylake pipeline run alerts --mode batch --from --to``.

Until the source first answers the job waits (a site may start the job
before the alerts service); later failures keep the running rules.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pyflink.common import CompletableFuture, JobClient, JobStatus
from pyflink.java_gateway import get_gateway
from pyflink.table import TableResult

from citylake.config import AlertRule, CityConfig
from citylake.pipelines import runner
from citylake.pipelines.alerts.rulesource import RuleSource, RulesUnavailable, same_rules
from citylake.pipelines.jobs import JobSet

log = logging.getLogger(__name__)
JOB = "alerts"
SAVEPOINTS_KEPT = 2
SAVEPOINT_ATTEMPTS = 10
SAVEPOINT_RETRY_S = 2.0


def with_rules(config: CityConfig, rules: tuple[AlertRule, ...]) -> CityConfig:
    pipelines = config.pipelines.model_copy(update={"alerts": list(rules)})
    return config.model_copy(update={"pipelines": pipelines})


def savepoint_dir(config: CityConfig, key: str = JOB) -> Path:
    return config.data_dir / "savepoints" / key


def newest_state(config: CityConfig, key: str = JOB) -> Path | None:
    """The newest of the job's retained checkpoints and the savepoints this
    loop took: after a crash right after a re-plan the savepoint is newer than
    any checkpoint, and resuming from an older checkpoint would read the
    files between the two again."""
    candidates = [m.parent for m in savepoint_dir(config, key).glob("*/_metadata")]
    checkpoint = runner.latest_checkpoint(config, key)
    if checkpoint is not None:
        candidates.append(checkpoint)
    return max(candidates, key=lambda p: (p / "_metadata").stat().st_mtime) if candidates else None


def first_rules(source: RuleSource, poll_s: float, sleep: Callable[[float], None]) -> tuple[AlertRule, ...]:
    attempt = 0
    while True:
        try:
            return source.rules()
        except RulesUnavailable as exc:
            attempt += 1
            log.warning("waiting for the alert rules (attempt %d): %s", attempt, exc)
            sleep(min(poll_s * attempt, 30.0))


def _ended(result: TableResult, client: JobClient) -> None:
    status = client.get_job_status().result()
    if status.is_globally_terminal_state():
        if status == JobStatus.FAILED:
            result.wait()  # raises the job's own error
        raise RuntimeError(f"the alerts job ended by itself ({status.name}); see the log above")


def _changed_rules(
    result: TableResult,
    client: JobClient,
    source: RuleSource,
    current: tuple[AlertRule, ...],
    poll_s: float,
    sleep: Callable[[float], None],
) -> tuple[AlertRule, ...]:
    """Wait until the source's rules differ from ``current``, watching the job."""
    failing = False
    while True:
        sleep(poll_s)
        _ended(result, client)
        try:
            rules = source.rules()
        except RulesUnavailable as exc:
            if not failing:
                log.warning("keeping the %d running alert rules: %s", len(current), exc)
            failing = True
            continue
        if failing:
            log.info("the alert rules are readable again (%s)", source.describe())
            failing = False
        if not same_rules(rules, current):
            return rules


def _stop_with_savepoint(client: JobClient, directory: str) -> str:
    """``JobClient.stop_with_savepoint``, through Java: PyFlink 2.3's wrapper
    calls ``stopWithSavepoint(boolean, String)``, which Flink 2 no longer has
    (it takes a savepoint format too), so it always fails."""
    formats = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType
    future = client._j_job_client.stopWithSavepoint(False, directory, formats.DEFAULT)
    return str(CompletableFuture(future, str).result())


def _stop(
    client: JobClient, config: CityConfig, sleep: Callable[[float], None], key: str = JOB
) -> Path | None:
    """Stop with a savepoint, or cancel and fall back to the last checkpoint."""
    target = savepoint_dir(config, key)
    target.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, SAVEPOINT_ATTEMPTS + 1):
        try:
            location = _stop_with_savepoint(client, target.resolve().as_uri())
            break
        except Exception as exc:  # any failure of the savepoint leaves the job and its checkpoints
            # A job just started may still be deploying its tasks, which
            # refuses a savepoint for a moment: worth a few more tries.
            reason = str(exc).splitlines()[0][:300]
            if attempt < SAVEPOINT_ATTEMPTS:
                log.info("savepoint attempt %d failed (%s); trying again", attempt, reason)
                sleep(SAVEPOINT_RETRY_S)
                continue
            log.warning(
                "stop with a savepoint failed (%s); cancelling, resuming from the last checkpoint", reason
            )
            # The lake holds only what checkpoints committed, so resuming
            # from the last one (or from scratch, if none completed) writes
            # every row once; what was read since is read again.
            client.cancel().result()
            return runner.latest_checkpoint(config, key)
    _prune(target, keep=SAVEPOINTS_KEPT)
    return Path(location.removeprefix("file:"))


def _prune(directory: Path, keep: int) -> None:
    """Every re-plan leaves a savepoint; the newest ones are all a restart needs."""
    done = sorted(
        (m.parent for m in directory.glob("*/_metadata")), key=lambda p: (p / "_metadata").stat().st_mtime
    )
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def follow(
    config: CityConfig,
    source: RuleSource,
    poll_s: float,
    fresh: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    jobs: JobSet | None = None,
) -> None:
    """Run the streaming alerts job until interrupted, re-planned at each
    change of rules. ``jobs``: the set the alerts job is combined into (one
    Flink job), re-planned and restored as a whole: the other jobs' plans do
    not change with the rules, so their state carries over the same way."""
    job_set = jobs or JobSet.of(JOB)
    runner.prepare_state(config, job_set, fresh)
    rules = first_rules(source, poll_s, sleep)
    resume = None if fresh else newest_state(config, job_set.key)
    while True:
        log.info(
            "alerts job planned with %d rule(s) from %s%s",
            len(rules),
            source.describe(),
            f", resuming from {resume}" if resume else "",
        )
        if not rules:
            log.info("no alert rules yet: the job runs idle and picks them up when they appear")
        result = runner.start(with_rules(config, rules), job_set, "streaming", resume_from=resume)
        client = result.get_job_client()
        if client is None:
            raise RuntimeError("Flink gave no job client for the alerts job; cannot follow its rules")
        log.info("alerts job running (Flink job %s) with %d rule(s)", client.get_job_id(), len(rules))
        try:
            new_rules = _changed_rules(result, client, source, rules, poll_s, sleep)
        except KeyboardInterrupt:
            log.info("cancelling Flink job %s", client.get_job_id())
            client.cancel().result()
            raise
        names = sorted({r.name for r in new_rules} ^ {r.name for r in rules})
        log.info(
            "alert rules changed (%d -> %d%s): re-planning the job",
            len(rules),
            len(new_rules),
            f"; added or removed: {', '.join(names)}" if names else "",
        )
        resume = _stop(client, config, sleep, job_set.key)
        rules = new_rules
