"""The ``alerts`` job: the rules of ``pipelines.alerts`` over deduplicated
landing readings, an episode per rule, device and metric from the first
reading out of bounds to the first one back inside them (event-time order).

Four steps, each a file here: ``rule.sql`` (the readings a rule watches,
rendered per rule), ``rates.sql`` (what the rule compares and whether it is
out of bounds), ``transitions.sql`` (where that changes) and ``episodes.sql``
(closings paired with their openings); ``alerts.sql`` writes the lake rows.
"""

from __future__ import annotations

from pathlib import Path

from pyflink.table import Table, TableEnvironment

from citylake.config import AlertRule, CityConfig
from citylake.pipelines.readings.job import deduplicated
from citylake.pipelines.sqltext import literal, render

INPUTS = ("readings",)
OUTPUTS = ("alerts",)
HERE = Path(__file__).parent
STEPS = (
    ("alert_rates", "rates.sql"),
    ("alert_transitions", "transitions.sql"),
    ("alert_episodes", "episodes.sql"),
)


def rule_sql(rule: AlertRule) -> str:
    """The readings ``rule`` watches, as a SELECT with the rule's settings as literals."""
    template = (HERE / "rule.sql").read_text("utf-8")
    try:
        return render(
            template,
            rule=literal(rule.name),
            kind=literal(rule.kind),
            above=literal(rule.above),
            below=literal(rule.below),
            severity=literal(rule.severity),
            message=literal(rule.message),
            metric=literal(rule.metric),
            device_prefix=literal(rule.device_prefix),
        )
    except ValueError as exc:
        raise ValueError(f"alert rule {rule.name!r}: {exc}") from None


def readings_sql(rules: list[AlertRule]) -> str:
    """Every rule's readings in one relation; the later steps key by rule."""
    return "\nUNION ALL\n".join(f"SELECT * FROM (\n{rule_sql(rule)}\n)" for rule in rules)


def transform(t_env: TableEnvironment, config: CityConfig) -> dict[str, Table]:
    rules = config.pipelines.alerts
    if not rules:
        raise ValueError("the alerts job has no rules: add some under pipelines.alerts in city.yaml")
    deduplicated(t_env)
    t_env.create_temporary_view("alert_readings", t_env.sql_query(readings_sql(rules)))
    for view, sql_file in STEPS:
        t_env.create_temporary_view(view, t_env.sql_query((HERE / sql_file).read_text("utf-8")))
    return {"alerts": t_env.sql_query((HERE / "alerts.sql").read_text("utf-8"))}
