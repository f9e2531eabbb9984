"""``/v1/rules`` (alert rules: create, read, replace, delete, export) and
``/v1/alerts`` (active and past alerts from the lake)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import duckdb
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Response, status
from fastapi.responses import PlainTextResponse

from citylake.config import AlertRule
from citylake.services.alerts.deps import get_rules, lake_cursor
from citylake.services.alerts.history import AlertFilter, list_alerts
from citylake.services.alerts.models import Alert, AlertList, RuleList, StoredRuleBody
from citylake.services.alerts.rules import RuleBook, StoredRule, parse_etags, rules_yaml
from citylake.services.auth import Scope, require
from citylake.services.instants import parse_instant

router = APIRouter(prefix="/v1")
# Changing rules changes what the city is alerted to: a read key gets 403.
WRITE = Depends(require(Scope.WRITE))

Rules = Annotated[RuleBook, Depends(get_rules)]
# The pattern of AlertRule.name: a path that cannot name a rule is a 422, not a lookup.
RuleName = Annotated[
    str, Path(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="the rule's name", examples=["pm25-high"])
]
IfMatch = Annotated[
    str | None,
    Header(description="ETag(s) of the version you read; 412 if the rule changed since (or `*`)"),
]
RESERVED_NAMES = {"export"}  # GET /v1/rules/export is the YAML export, not a rule
TAKES_EFFECT = (
    "Rules changed here take effect within seconds in a streaming `alerts` job that follows this "
    "service (pipelines.alerts_from, or `citylake pipeline run alerts --rules-from`), for the readings "
    "it reads from then on; a job planned from city.yaml's pipelines.alerts (GET /v1/rules/export "
    "writes it) or submitted to a session cluster takes them at its next start."
)


def _body(stored: StoredRule) -> StoredRuleBody:
    return StoredRuleBody(**stored.rule.model_dump(), etag=stored.etag)


def _tag(response: Response, stored: StoredRule) -> None:
    response.headers["ETag"] = f'"{stored.etag}"'


def _allowed_name(name: str) -> None:
    if name in RESERVED_NAMES:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"body.name: {name!r} is reserved (GET /v1/rules/{name} is the export); choose another",
        )


@router.get("/rules", response_model=RuleList, tags=["rules"], summary="All alert rules")
async def all_rules(rules: Rules) -> RuleList:
    return RuleList(rules=[_body(r) for r in await rules.all()], note=TAKES_EFFECT)


@router.get(
    "/rules/export",
    tags=["rules"],
    summary="The rules as city.yaml's pipelines.alerts",
    response_class=PlainTextResponse,
    responses={200: {"content": {"application/yaml": {}}, "description": "a city.yaml fragment"}},
)
async def export_rules(rules: Rules) -> PlainTextResponse:
    text = rules_yaml([r.rule for r in await rules.all()], datetime.now(UTC))
    return PlainTextResponse(text, media_type="application/yaml")


@router.post(
    "/rules",
    dependencies=[WRITE],
    response_model=StoredRuleBody,
    status_code=status.HTTP_201_CREATED,
    tags=["rules"],
    summary="Add a rule (names are unique: 409 if taken)",
    description=TAKES_EFFECT,
)
async def create_rule(rule: AlertRule, rules: Rules, response: Response) -> StoredRuleBody:
    _allowed_name(rule.name)
    stored = await rules.create(rule)
    _tag(response, stored)
    response.headers["Location"] = f"/v1/rules/{rule.name}"
    return _body(stored)


@router.get("/rules/{name}", response_model=StoredRuleBody, tags=["rules"], summary="One rule")
async def get_rule(name: RuleName, rules: Rules, response: Response) -> StoredRuleBody:
    stored = await rules.get(name)
    _tag(response, stored)
    return _body(stored)


@router.put(
    "/rules/{name}",
    dependencies=[WRITE],
    response_model=StoredRuleBody,
    tags=["rules"],
    summary="Create or replace a rule (If-Match for safe updates)",
    description=TAKES_EFFECT,
    responses={201: {"description": "created"}, 412: {"description": "If-Match/If-None-Match failed"}},
)
async def put_rule(
    name: RuleName,
    rule: AlertRule,
    rules: Rules,
    response: Response,
    if_match: IfMatch = None,
    if_none_match: Annotated[str | None, Header(description="`*`: create only")] = None,
) -> StoredRuleBody:
    if rule.name != name:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"body.name: {rule.name!r} differs from the name in the path ({name!r}); "
            "renaming is a DELETE and a POST",
        )
    _allowed_name(rule.name)
    stored, created = await rules.put(rule, parse_etags(if_match), parse_etags(if_none_match))
    _tag(response, stored)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _body(stored)


@router.delete(
    "/rules/{name}",
    dependencies=[WRITE],
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["rules"],
    summary="Delete a rule",
    response_class=Response,
)
async def delete_rule(name: RuleName, rules: Rules, if_match: IfMatch = None) -> Response:
    await rules.delete(name, parse_etags(if_match))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/alerts", response_model=AlertList, tags=["alerts"], summary="Active and past alerts")
def get_alerts(
    cursor: Annotated[duckdb.DuckDBPyConnection, Depends(lake_cursor)],
    state: Annotated[
        Literal["active", "closed"] | None, Query(description="active: ended_at is null")
    ] = None,
    device_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    since: Annotated[
        str | None,
        Query(
            max_length=64,
            description="ISO 8601 instant with a zone: alerts still active at or after it",
            examples=["2026-11-25T08:00:00Z"],
        ),
    ] = None,
    rule: Annotated[str | None, Query(max_length=63)] = None,
    severity: Annotated[Literal["info", "warning", "critical"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AlertList:
    moment = None
    if since is not None:
        try:
            moment = parse_instant(since)
        except ValueError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=f"query.since: {exc}") from None
    rows = list_alerts(
        cursor,
        AlertFilter(
            state=state, device_id=device_id, since=moment, rule=rule, severity=severity, limit=limit
        ),
    )
    return AlertList(alerts=[Alert(**row) for row in rows])
