"""The ``alerts`` job: the alert rules (``config.pipelines.alerts``, which
``follow.py`` fills from the alerts service or city.yaml) over deduplicated
landing readings, an episode per rule, device and metric from the first
reading out of bounds to the first one back inside them (event-time order).

Four steps, each a file here: ``rule.sql`` (each reading paired with the
rules that watch it; the rules one array literal), ``rates.sql`` (what the rule compares and whether it is
out of bounds), ``transitions.sql`` (where that changes) and ``episodes.sql``
(closings paired with their openings); ``alerts.sql`` writes the lake rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import AlertRule, CityConfig
from citylake.pipelines.readings.job import deduplicated
from citylake.pipelines.sqltext import literal, render

INPUTS = ("readings",)
OUTPUTS = ("alerts",)
HERE = Path(__file__).parent
# Column types of a rule in rule.sql's array: rule, kind, above, below,
# severity, message, metric, device_prefix.
ROW_TYPES = ("STRING", "STRING", "DOUBLE", "DOUBLE", "STRING", "STRING", "STRING", "STRING")
NO_RULE = "ROW(" + ", ".join(f"CAST(NULL AS {t})" for t in ROW_TYPES) + ")"
# Every reading meets every rule before the metric filter: a bound on that
# work and on the SQL text of a rule set.
MAX_RULES = 1000
STEPS = (
    ("alert_rates", "rates.sql"),
    ("alert_transitions", "transitions.sql"),
    ("alert_episodes", "episodes.sql"),
)


def rule_row(rule: AlertRule) -> str:
    """``rule`` as a ROW literal of the array ``rule.sql`` unnests: its
    settings as literals, each cast so every rule set has one row type."""
    try:
        values = [
            literal(rule.name),
            literal(rule.kind),
            literal(rule.above),
            literal(rule.below),
            literal(rule.severity),
            literal(rule.message),
            literal(rule.metric),
            literal(rule.device_prefix),
        ]
    except ValueError as exc:
        raise ValueError(f"alert rule {rule.name!r}: {exc}") from None
    return "ROW(" + ", ".join(f"CAST({v} AS {t})" for v, t in zip(values, ROW_TYPES, strict=True)) + ")"


def readings_sql(rules: Sequence[AlertRule]) -> str:
    """The readings every rule watches, paired with the rule, as one SELECT."""
    if len(rules) > MAX_RULES:
        raise ValueError(
            f"{len(rules)} alert rules; the alerts job takes at most {MAX_RULES} "
            "(every reading is compared with each rule of its metric)"
        )
    rows = [NO_RULE, *(rule_row(rule) for rule in rules)]
    return render((HERE / "rule.sql").read_text("utf-8"), rules="ARRAY[\n  " + ",\n  ".join(rows) + "\n]")


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    """With no rules the job still runs, idle: nothing matches, and a job
    re-planned with rules later restores its state (see ``rule.sql``)."""
    deduplicated(t_env)
    t_env.create_temporary_view("alert_readings", t_env.sql_query(readings_sql(config.pipelines.alerts)))
    for view, sql_file in STEPS:
        t_env.create_temporary_view(view, t_env.sql_query((HERE / sql_file).read_text("utf-8")))
    return {"alerts": t_env.sql_query((HERE / "alerts.sql").read_text("utf-8"))}
