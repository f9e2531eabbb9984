"""Where the ``alerts`` job gets its rules: the alerts service, or city.yaml.

The alerts service (``services/alerts``) is the rule book a site edits; the
job reads it through the service's own API (``GET /v1/rules``), either at a URL
or by Dapr app id through the job's sidecar (service invocation), so it never
depends on the service's state store layout. Without a service the rules are
``pipelines.alerts`` of the config file, re-read when it changes.

A source answers the current rule set or raises ``RulesUnavailable`` with what
to check; the caller decides whether to wait (a streaming job keeps its rules
and asks again) or stop (a batch run cannot plan without them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from citylake.config import AlertRule, CityConfig, ConfigError, load_config

# A rule set is small; a larger answer is not the alerts service speaking.
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class RulesUnavailable(Exception):
    """The rules could not be read; the message names the source and what to check."""


class RuleSource(Protocol):
    def describe(self) -> str: ...

    def rules(self) -> tuple[AlertRule, ...]: ...


@dataclass(frozen=True)
class ConfigRules:
    """``pipelines.alerts`` of a config file, read again at every call."""

    path: Path

    def describe(self) -> str:
        return f"pipelines.alerts of {self.path}"

    def rules(self) -> tuple[AlertRule, ...]:
        try:
            return tuple(load_config(self.path).config.pipelines.alerts)
        except (ConfigError, OSError) as exc:
            raise RulesUnavailable(f"{self.describe()}: {exc}") from None


@dataclass(frozen=True)
class ServiceRules:
    """``GET <base_url>/v1/rules`` of the alerts service."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 10.0

    def describe(self) -> str:
        return f"the alerts service at {self.base_url}"

    def rules(self) -> tuple[AlertRule, ...]:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        url = f"{self.base_url}/v1/rules"
        try:
            with httpx.stream("GET", url, headers=headers, timeout=self.timeout_s) as response:
                body = _bounded_body(response, url)
        except httpx.HTTPError as exc:
            raise RulesUnavailable(
                f"{self.describe()} did not answer GET /v1/rules ({exc}); "
                "is it running (citylake serve alerts) and is the address right?"
            ) from None
        if response.status_code != 200:
            raise RulesUnavailable(
                f"{self.describe()} answered GET /v1/rules with {response.status_code}: {body[:300]!r}"
                + (
                    " (set services.alerts.read_keys or api_keys to a key it accepts)"
                    if response.status_code == 401
                    else ""
                )
            )
        return parse_rules(body, self.describe())


def _bounded_body(response: httpx.Response, url: str) -> str:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise RulesUnavailable(f"GET {url} answered more than {MAX_ANSWER_BYTES} bytes; not a rule list")
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def parse_rules(body: str, source: str) -> tuple[AlertRule, ...]:
    """The rules of a ``/v1/rules`` answer (``{"rules": [{...rule, "etag"}]}``)."""
    import json

    try:
        items = json.loads(body)["rules"]
        if not isinstance(items, list):
            raise TypeError("rules is not a list")
        rules = tuple(
            AlertRule.model_validate({k: v for k, v in item.items() if k != "etag"}) for item in items
        )
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise RulesUnavailable(f"{source}: the answer of GET /v1/rules is not a rule list ({exc})") from None
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RulesUnavailable(f"{source}: rule names repeat in {names}")
    return rules


def rule_source(spec: str | None, config: CityConfig, config_path: Path) -> RuleSource:
    """The source ``spec`` names: an ``http(s)://`` URL of the alerts service,
    a Dapr app id reached through this process's sidecar (``DAPR_HTTP_PORT``),
    or, when ``spec`` is None, the config file's ``pipelines.alerts``."""
    if spec is None:
        return ConfigRules(config_path)
    # Reading rules needs only the read scope. A keys_file is the service's
    # own (a Secret mounted in its pod); the job takes a key from the config
    # lists, which a deployment fills from the env (`${ALERTS_READ_KEY}`).
    keys = [*config.services.alerts.read_keys, *config.services.alerts.api_keys]
    api_key = keys[0] if keys else None
    if spec.startswith(("http://", "https://")):
        return ServiceRules(spec.rstrip("/"), api_key)
    if "/" in spec or ":" in spec or not spec.strip():
        raise ValueError(
            f"rules source {spec!r} is neither an http(s):// URL of the alerts service nor a Dapr app id"
        )
    port = os.environ.get("DAPR_HTTP_PORT")
    if not port:
        raise ValueError(
            f"rules source {spec!r} is a Dapr app id, but DAPR_HTTP_PORT is not set: run the job "
            "beside a sidecar (dapr run ... -- citylake pipeline run alerts) or give the service's URL"
        )
    return ServiceRules(f"http://127.0.0.1:{port}/v1.0/invoke/{quote(spec, safe='')}/method", api_key)


def same_rules(a: Sequence[AlertRule], b: Sequence[AlertRule]) -> bool:
    """Equal as sets: the service lists rules by name, the config file in its own order."""
    return sorted(a, key=lambda r: r.name) == sorted(b, key=lambda r: r.name)
