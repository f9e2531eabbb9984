"""A user job planned by Flink before it runs: refused with file, line and reason.

The job is planned in both modes on the same DDL the run declares (the
landing sources and lake sinks generated from the schemas), through to
``explain``: Flink's own parser finds syntax errors, its validator unknown
tables and columns, its planner what a sink cannot take (an updating
aggregate into the append-only lake in streaming mode); the columns the job
returns are held to its declared outputs (user_jobs.check_columns). Flink
gives positions in the text it was handed, which is the SQL file line for
line (UserJob.sql_text), so they are the file's. Nothing is submitted.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from citylake.config import CityConfig, ConfigDocument
from citylake.lake.registry import SchemaChanged, check_registration
from citylake.pipelines.catalog import JobCatalog, JobProblem, JobRefused
from citylake.pipelines.tables import Mode
from citylake.pipelines.user_jobs import OutputMismatch, UserJob
from citylake.schemas import DataLayout

# "... at line 3, column 7." (parser), "From line 3, column 6 to ..." (validator).
_POSITION = re.compile(r"\b(?:at|From) line (\d+), column (\d+)")
_JAVA_EXCEPTION = re.compile(r"^: ([\w.$]+(?:Exception|Error)): ", re.MULTILINE)
_CAUSE = re.compile(r"^Caused by: ([\w.$]+(?:Exception|Error)): (.*)$", re.MULTILINE)


def flink_reason(text: str) -> tuple[str, int | None]:
    """Flink's message without the Java stack, and the line it points at."""
    match = _JAVA_EXCEPTION.search(text)
    body = text[match.end() :] if match else text
    message_lines = []
    for line in body.splitlines():
        if line.startswith("\tat ") or line.startswith("Caused by"):
            break
        if line.strip():
            message_lines.append(line.strip())
    message = " ".join(message_lines[:4]) or text.strip().splitlines()[0]
    # A planner error's own message is often a wrapper; its cause says what.
    causes = _CAUSE.findall(text)
    if causes and ("line" not in message) and causes[-1][1] not in message:
        message = f"{message}: {causes[-1][1]}"
    position = _POSITION.search(message)
    number = int(position.group(1)) if position else None
    message = re.sub(r"^(?:[\w.$]+(?:Exception|Error): )+", "", message)
    message = re.sub(r"^SQL (?:parse|validation) failed\. ", "", message)
    if "doesn't support consuming update changes" in message:
        message += (
            "; the lake's files are append-only: aggregate in an event-time window "
            "(TUMBLE, HOP, CUMULATE) so each result row is final when written"
        )
    return message, number


def _first_line(sql: str, keyword: str) -> int | None:
    for number, line in enumerate(sql.splitlines(), 1):
        if re.search(rf"\b{keyword}\b", line.split("--", 1)[0], re.IGNORECASE):
            return number
    return None


def _column_line(sql: str, column: str | None) -> int | None:
    """The line of a column's alias in the SELECT (else of its first mention)."""
    if column is None:
        return None
    lines = sql.splitlines()
    for pattern in (rf"\bAS\s+`?{re.escape(column)}`?\b", rf"\b{re.escape(column)}\b"):
        for number, line in enumerate(lines, 1):
            if re.search(pattern, line.split("--", 1)[0], re.IGNORECASE):
                return number
    return None


def _code_frame(the_job: UserJob, exc: BaseException) -> tuple[str, int | None] | None:
    """The deepest frame of a module job's own file in ``exc``'s traceback."""
    source = the_job.source_file
    if source is None:
        return None
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == source]
    return (str(source), frames[-1].lineno) if frames else None


def _problem(the_job: UserJob, exc: BaseException, mode: Mode) -> JobProblem:
    source = str(the_job.source_file or the_job.declared_in)
    if isinstance(exc, OutputMismatch):
        line = None
        if the_job.config.sql:
            sql = the_job.sql_text()
            line = _column_line(sql, exc.column) or _first_line(sql, "SELECT")
        frame = None if the_job.config.sql else _code_frame(the_job, exc)
        return JobProblem(frame[0] if frame else source, line or (frame[1] if frame else None), str(exc))
    message, line = flink_reason(str(exc))
    if the_job.config.sql is None:
        # Positions are in the SQL text the module built, not in its file.
        frame = _code_frame(the_job, exc)
        if frame is not None:
            return JobProblem(frame[0], frame[1], f"{message} ({mode} mode)")
    if line is None and the_job.config.sql is not None:
        sql = the_job.sql_text()
        keyword = "GROUP BY" if "update changes" in message else "SELECT"
        line = _first_line(sql, keyword) or _first_line(sql, "SELECT")
    return JobProblem(source, line, f"{message} ({mode} mode)")


def check_job(
    config: CityConfig,
    catalog: JobCatalog,
    name: str,
    config_path: Path | str = "city.yaml",
    document: ConfigDocument | None = None,
    modes: tuple[Mode, ...] = ("streaming", "batch"),
) -> None:
    """Raise ``JobRefused`` if the user job ``name`` would fail to plan or
    would write other columns than the lake holds; built-in jobs pass."""
    the_job = catalog.user.get(name)
    if the_job is None:
        catalog.get(name)  # an unknown name: KeyError listing the known jobs
        return
    layout = DataLayout(config.data_dir)
    problems: list[JobProblem] = []
    for registration in the_job.registrations:
        try:
            check_registration(layout, registration)
        except SchemaChanged as exc:
            line = (
                document.line_of(("pipelines", "user_jobs", name, "outputs", registration.table))
                if document is not None and the_job.declared_in == str(config_path)
                else None
            )
            problems.append(JobProblem(the_job.declared_in, line, str(exc)))
    if the_job.config.lake_inputs:
        # A batch-only job: checked in the mode it can run in, refused in the other.
        if modes == ("streaming",):
            line = (
                document.line_of(("pipelines", "user_jobs", name, "lake_inputs"))
                if document is not None and the_job.declared_in == str(config_path)
                else None
            )
            problems.append(
                JobProblem(
                    the_job.declared_in,
                    line,
                    f"lake_inputs ({', '.join(the_job.config.lake_inputs)}) are read in batch mode only "
                    "(a streaming scan of the lake would read each compaction's output as new rows); "
                    "run it with --mode batch",
                )
            )
        modes = tuple(m for m in modes if m == "batch")
    if problems:
        raise JobRefused(name, problems)
    from citylake.pipelines.runner import declare_tables, table_environment

    for mode in modes:
        t_env = table_environment(config, name, mode)
        try:
            declare_tables(t_env, config, catalog.job_set([name]), mode)
            statements = t_env.create_statement_set()
            for output, result in the_job.transform(t_env, config).items():
                statements.add_insert(f"lake_{output}", result)
            statements.explain()
        except Exception as exc:  # Flink's errors arrive as Py4J's, the job's own as anything
            raise JobRefused(name, [_problem(the_job, exc, mode)]) from None
