"""Where the alerts job reads its rules: the alerts service's answer, a Dapr
app id, or the config file; and what it says when it cannot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from citylake.config import AlertRule, CityConfig, ServiceConfig, ServicesConfig
from citylake.pipelines.alerts.rulesource import (
    ConfigRules,
    RulesUnavailable,
    ServiceRules,
    parse_rules,
    rule_source,
    same_rules,
)

CONFIG = CityConfig(site="s")


def test_the_service_answer_reads_as_rules_without_etags() -> None:
    body = json.dumps(
        {
            "rules": [{"name": "hot", "metric": "temp", "above": 90, "etag": "abc"}],
            "note": "whatever the service says",
        }
    )
    assert parse_rules(body, "svc") == (AlertRule(name="hot", metric="temp", above=90),)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>", "not a rule list"),
        ('{"rules": {}}', "not a rule list"),
        ('{"rules": [{"name": "x", "metric": "m"}]}', "needs `above`, `below` or both"),
        ('{"rules": [{"name": "x", "metric": "m", "above": 1, "sql": "DROP"}]}', "not a rule list"),
        (
            '{"rules": [{"name": "x", "metric": "m", "above": 1}, {"name": "x", "metric": "n", "above": 2}]}',
            "repeat",
        ),
    ],
)
def test_an_answer_that_is_not_a_rule_list_is_named(body: str, problem: str) -> None:
    with pytest.raises(RulesUnavailable, match=problem):
        parse_rules(body, "the alerts service at http://x")


def test_a_url_is_the_service_and_an_api_key_goes_along() -> None:
    config = CityConfig(site="s", services=ServicesConfig(alerts=ServiceConfig(port=8082, api_keys=["k1"])))
    source = rule_source("http://127.0.0.1:8082/", config, Path("city.yaml"))
    assert source == ServiceRules("http://127.0.0.1:8082", "k1")


def test_a_read_key_is_enough_to_follow_the_rules() -> None:
    alerts = ServiceConfig(port=8082, read_keys=["read-key-0123456789"], api_keys=["write-key-0123456789"])
    config = CityConfig(site="s", services=ServicesConfig(alerts=alerts))
    source = rule_source("http://127.0.0.1:8082", config, Path("city.yaml"))
    assert source == ServiceRules("http://127.0.0.1:8082", "read-key-0123456789")


def test_an_app_id_goes_through_the_sidecar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAPR_HTTP_PORT", "3500")
    source = rule_source("alerts", CONFIG, Path("city.yaml"))
    assert source == ServiceRules("http://127.0.0.1:3500/v1.0/invoke/alerts/method", None)


def test_an_app_id_without_a_sidecar_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAPR_HTTP_PORT", raising=False)
    with pytest.raises(ValueError, match="DAPR_HTTP_PORT is not set"):
        rule_source("alerts", CONFIG, Path("city.yaml"))


def test_neither_url_nor_app_id_is_refused() -> None:
    with pytest.raises(ValueError, match="neither an http"):
        rule_source("ftp://x/y", CONFIG, Path("city.yaml"))


def test_an_unreachable_service_says_where_it_looked() -> None:
    with pytest.raises(RulesUnavailable, match=r"127\.0\.0\.1:9 did not answer GET /v1/rules"):
        ServiceRules("http://127.0.0.1:9", timeout_s=2).rules()


def test_without_a_service_the_config_file_is_read_at_each_call(tmp_path: Path) -> None:
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump({"site": "s", "pipelines": {"alerts": []}}))
    source = rule_source(None, CONFIG, path)
    assert source == ConfigRules(path) and source.rules() == ()
    rule = {"name": "hot", "metric": "temp", "above": 90}
    path.write_text(yaml.safe_dump({"site": "s", "pipelines": {"alerts": [rule]}}))
    assert source.rules() == (AlertRule.model_validate(rule),)
    path.write_text("site: [")
    with pytest.raises(RulesUnavailable, match=str(path)):
        source.rules()


def test_rule_sets_compare_by_content_not_order() -> None:
    a, b = AlertRule(name="a", metric="m", above=1), AlertRule(name="b", metric="m", above=2)
    assert same_rules([a, b], [b, a])
    assert not same_rules([a], [a.model_copy(update={"above": 3.0})])
