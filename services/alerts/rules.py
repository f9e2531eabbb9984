"""Alert rules kept in a state store, changed safely by many writers.

All rules live in one state entry (``alert-rules``): a rule set is small, and
one entry makes "names are unique" a single compare-and-set instead of a
cross-key transaction. Two levels of ETags:

- the store's ETag on the entry: every change reads it, applies the change and
  saves with it (Dapr ``first-write``); if another writer saved in between the
  save fails and the change is re-applied to the fresh entry, so concurrent
  changes to different rules all land;
- an ETag per rule, given to clients (``ETag`` header, ``If-Match``): a client
  that read rule X and saves it with ``If-Match`` gets 412 if anyone changed X
  since, and is not disturbed by changes to other rules.

Until the first change the entry does not exist and the book shows the rules of
``city.yaml`` (``pipelines.alerts``), so the service and the Flink job start
from the same rules. A streaming ``alerts`` job run with
``pipelines.alerts_from`` (or ``--rules-from``) naming this service reads
``GET /v1/rules`` every few seconds and re-plans itself when the rules change
(``pipelines/alerts/follow.py``); ``GET /v1/rules/export`` gives the same
rules as city.yaml's ``pipelines.alerts`` for a site that runs the job from
the file.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from ruamel.yaml import YAML

from citylake.config import AlertRule
from citylake.services.instants import iso_ms
from citylake.services.state import EtagMismatch, StateStore

RULES_KEY = "alert-rules"
FORMAT_VERSION = 1
T = TypeVar("T")


class RuleError(Exception):
    """A change that cannot be made as asked; ``status`` is the HTTP answer."""

    status = 400


class RuleNotFound(RuleError):
    status = 404


class RuleExists(RuleError):
    status = 409


class RuleChanged(RuleError):
    """The client's ``If-Match``/``If-None-Match`` does not hold any more."""

    status = 412


class RuleStoreBusy(RuleError):
    status = 503


class RuleStoreCorrupt(RuleError):
    status = 500


@dataclass(frozen=True)
class StoredRule:
    rule: AlertRule
    etag: str


def _new_etag() -> str:
    return uuid.uuid4().hex


def _seed_etag(rule: AlertRule) -> str:
    # Not stored until the first change, so it must be the same at every read.
    return "seed-" + hashlib.sha256(rule.model_dump_json().encode()).hexdigest()[:20]


def parse_etags(header: str | None) -> list[str] | None:
    """``If-Match``/``If-None-Match`` values: ``"a", W/"b"`` -> ``["a", "b"]``; ``*`` stays."""
    if header is None:
        return None
    tags = []
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag:
            tags.append(tag)
    return tags


def _holds(tags: list[str], current: StoredRule | None) -> bool:
    return current is not None and ("*" in tags or current.etag in tags)


class RuleBook:
    def __init__(self, store: StateStore, seed: Sequence[AlertRule] = (), attempts: int = 20) -> None:
        self.store = store
        self.seed = list(seed)
        self.attempts = attempts

    async def _load(self) -> tuple[dict[str, StoredRule], str | None]:
        entry = await self.store.get(RULES_KEY)
        if entry is None:
            return {r.name: StoredRule(r, _seed_etag(r)) for r in self.seed}, None
        try:
            items = entry.value["rules"]
            rules = [StoredRule(AlertRule.model_validate(i["rule"]), str(i["etag"])) for i in items]
        except (KeyError, TypeError, ValidationError) as exc:
            raise RuleStoreCorrupt(
                f"the stored rules ({RULES_KEY!r}) do not read as alert rules ({exc}); "
                "fix or delete that state entry"
            ) from exc
        return {r.rule.name: r for r in rules}, entry.etag

    async def _change(self, change: Callable[[dict[str, StoredRule]], T]) -> T:
        """Apply ``change`` to the rules and save them, again on a fresh read
        whenever another writer got there first."""
        for attempt in range(self.attempts):
            rules, etag = await self._load()
            result = change(rules)
            document: dict[str, Any] = {
                "version": FORMAT_VERSION,
                "rules": [
                    {"rule": r.rule.model_dump(mode="json"), "etag": r.etag}
                    for r in sorted(rules.values(), key=lambda r: r.rule.name)
                ],
            }
            try:
                await self.store.save(RULES_KEY, document, etag=etag, create_only=etag is None)
            except EtagMismatch:
                # Jitter spreads writers that collided so they do not collide again.
                await asyncio.sleep(random.uniform(0, 0.005 * (attempt + 1)))
                continue
            return result
        raise RuleStoreBusy(f"the rules changed under this request {self.attempts} times in a row; retry")

    async def all(self) -> list[StoredRule]:
        rules, _ = await self._load()
        return sorted(rules.values(), key=lambda r: r.rule.name)

    async def get(self, name: str) -> StoredRule:
        rules, _ = await self._load()
        try:
            return rules[name]
        except KeyError:
            raise RuleNotFound(f"no alert rule named {name!r}") from None

    async def create(self, rule: AlertRule) -> StoredRule:
        def add(rules: dict[str, StoredRule]) -> StoredRule:
            if rule.name in rules:
                raise RuleExists(
                    f"an alert rule named {rule.name!r} exists; names are unique. "
                    f"PUT /v1/rules/{rule.name} replaces it"
                )
            rules[rule.name] = StoredRule(rule, _new_etag())
            return rules[rule.name]

        return await self._change(add)

    async def put(
        self, rule: AlertRule, if_match: list[str] | None = None, if_none_match: list[str] | None = None
    ) -> tuple[StoredRule, bool]:
        """Create or replace ``rule``; returns it and whether it was created."""

        def replace(rules: dict[str, StoredRule]) -> tuple[StoredRule, bool]:
            current = rules.get(rule.name)
            if if_match is not None and not _holds(if_match, current):
                raise RuleChanged(
                    f"alert rule {rule.name!r} "
                    + ("does not exist" if current is None else "changed since you read it")
                    + f" (If-Match {', '.join(if_match)}; now {current.etag if current else 'absent'}); "
                    "GET it again and retry"
                )
            if if_none_match is not None and _holds(if_none_match, current):
                raise RuleChanged(f"alert rule {rule.name!r} exists (If-None-Match)")
            rules[rule.name] = StoredRule(rule, _new_etag())
            return rules[rule.name], current is None

        return await self._change(replace)

    async def delete(self, name: str, if_match: list[str] | None = None) -> None:
        def remove(rules: dict[str, StoredRule]) -> None:
            current = rules.get(name)
            if current is None:
                raise RuleNotFound(f"no alert rule named {name!r}")
            if if_match is not None and not _holds(if_match, current):
                raise RuleChanged(
                    f"alert rule {name!r} changed since you read it (If-Match {', '.join(if_match)}; "
                    f"now {current.etag}); GET it again and retry"
                )
            del rules[name]

        await self._change(remove)


def rules_yaml(rules: Sequence[AlertRule], exported_at: datetime) -> str:
    """The rules as the ``pipelines.alerts`` fragment of city.yaml."""
    document = {"pipelines": {"alerts": [rule.model_dump(mode="json", exclude_none=True) for rule in rules]}}
    yaml = YAML()  # round-trip mode keeps each rule's keys in the model's order
    out = io.StringIO()
    yaml.dump(document, out)
    header = (
        f"# Alert rules exported by the citylake alerts service at {iso_ms(exported_at)}.\n"
        "# For a site whose alerts job reads city.yaml (no pipelines.alerts_from): replace\n"
        "# `pipelines.alerts` with this list; a streaming `citylake pipeline run alerts`\n"
        "# picks the edit up, a job on a session cluster at its next submission.\n"
    )
    return header + out.getvalue()
