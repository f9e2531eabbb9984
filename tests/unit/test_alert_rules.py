"""Alert rules become SQL literals: whatever an operator writes in a rule's
free-text settings stays data. (The same hostile rule runs through Flink in
tests/integration/test_pipeline_modes.py.)"""

from __future__ import annotations

import re

import duckdb
import pytest

from citylake.config import AlertRule
from citylake.pipelines.alerts.job import readings_sql, rule_sql
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
    rendered = rule_sql(hostile)
    assert literal(text) in rendered
    assert sql_without_literals(rendered) == sql_without_literals(rule_sql(plain))


def test_every_setting_of_a_rule_is_rendered() -> None:
    rule = AlertRule(
        name="jump", metric="pressure", kind="rate", above=2, below=-2, severity="critical", message=None
    )
    sql = rule_sql(rule)
    for fragment in ("'jump'", "'pressure'", "'rate'", "2.0", "-2.0", "'critical'"):
        assert fragment in sql
    assert "CAST(NULL AS STRING) AS message" in sql
    assert "CAST(NULL AS STRING) IS NULL OR POSITION" in sql  # no device prefix: every device


def test_an_infinite_bound_names_the_rule() -> None:
    rule = AlertRule(name="never", metric="temp", above=float("inf"))
    with pytest.raises(ValueError, match=r"alert rule 'never': expected a finite number"):
        rule_sql(rule)


def test_rules_are_one_relation() -> None:
    rules = [AlertRule(name=f"r{i}", metric="temp", above=i) for i in range(3)]
    assert readings_sql(rules).count("UNION ALL") == 2
