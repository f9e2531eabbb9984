"""Alert rules become SQL literals: whatever an operator writes in a rule's
free-text settings stays data. (The same hostile rule runs through Flink in
tests/integration/test_pipeline_modes.py.)"""

from __future__ import annotations

import re

import duckdb
import pytest

from citylake.config import AlertRule
from citylake.pipelines.alerts.job import MAX_RULES, readings_sql, rule_row
from citylake.pipelines.sqltext import literal, render

HOSTILE = [
    "it's",
    "'; DROP TABLE alerts; --",
    "-- not a comment",
    "/* nor this */",
    "back\\slash\\' and ''doubled''",
    "réchauffé 🔥 温度 Ω",
    "line\nbreak\ttab",
    "{rule} {message}",
]
# A string literal or a comment, whichever starts first: what is left is the SQL itself.
_LITERAL_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")


def sql_without_literals(sql: str) -> str:
    return _LITERAL_OR_COMMENT.sub(lambda m: "" if m.group().startswith("--") else "?", sql)


@pytest.mark.parametrize("text", HOSTILE)
def test_a_string_literal_reads_back_as_the_text(text: str) -> None:
    # DuckDB quotes strings as Flink does: quotes doubled, no backslash escapes.
    assert duckdb.sql(f"SELECT {literal(text)}").fetchone() == (text,)


@pytest.mark.parametrize("number", [0.0, -0.0, 90.0, -2.5, 0.1, 1e-7, 123456789.125, 1.7976931348623157e308])
def test_a_number_literal_is_the_same_double(number: float) -> None:
    assert float(literal(number)) == number
    assert duckdb.sql(f"SELECT CAST({literal(number)} AS DOUBLE)").fetchone() == (number,)


def test_literals_of_none_and_integers() -> None:
    assert literal(None) == "NULL"
    assert literal(90) == "90.0"


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_a_number_without_a_literal_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        literal(bad)


def test_a_boolean_is_not_a_number() -> None:
    with pytest.raises(TypeError):
        literal(True)


def test_render_fills_each_placeholder_once() -> None:
    assert render("a = {x} AND b = {y}", x="'{y}'", y="2.0") == "a = '{y}' AND b = 2.0"


def test_render_refuses_missing_and_unused_values() -> None:
    with pytest.raises(KeyError, match="missing: y; unused: z"):
        render("{x} {y}", x="1", z="2")


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_rule_changes_only_the_literals(text: str) -> None:
    hostile = AlertRule(name="odd", metric=text, above=50, device_prefix=text, message=text)
    plain = AlertRule(name="odd", metric="temp", above=50, device_prefix="boiler-", message="hot")
    rendered = rule_row(hostile)
    assert literal(text) in rendered
    assert sql_without_literals(rendered) == sql_without_literals(rule_row(plain))


def test_every_setting_of_a_rule_is_rendered() -> None:
    rule = AlertRule(
        name="jump", metric="pressure", kind="rate", above=2, below=-2, severity="critical", message=None
    )
    row = rule_row(rule)
    for fragment in ("'jump'", "'pressure'", "'rate'", "2.0", "-2.0", "'critical'"):
        assert fragment in row
    # message and device_prefix, in rule.sql's order of columns
    assert row.endswith("CAST(NULL AS STRING), CAST('pressure' AS STRING), CAST(NULL AS STRING))")


def test_an_infinite_bound_names_the_rule() -> None:
    rule = AlertRule(name="never", metric="temp", above=float("inf"))
    with pytest.raises(ValueError, match=r"alert rule 'never': expected a finite number"):
        rule_row(rule)


def test_every_rule_set_plans_the_same_sql_but_for_the_array() -> None:
    """The array of rules is the only part a rule set changes, so any rule set
    (none included) gives the same operator graph and a re-planned job can
    restore the state of the one it replaces."""
    sets = [[], [AlertRule(name="a", metric="temp", above=1)]]
    sets.append([AlertRule(name=f"r{i}", metric=f"m{i}", below=-i, kind="rate") for i in range(5)])
    shapes = {_without_array(readings_sql(rules)) for rules in sets}
    assert len(shapes) == 1
    assert readings_sql(sets[2]).count("ROW(") == 1 + 5  # the null rule, which matches nothing, first


def _without_array(sql: str) -> str:
    return re.sub(r"ARRAY\[.*?\n\]", "ARRAY[...]", sql, flags=re.DOTALL)


def test_a_bound_on_the_number_of_rules() -> None:
    rules = [AlertRule(name=f"r{i}", metric="temp", above=i) for i in range(MAX_RULES + 1)]
    with pytest.raises(ValueError, match=f"at most {MAX_RULES}"):
        readings_sql(rules)
