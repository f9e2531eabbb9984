"""Bodies of the alerts service."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from citylake.config import AlertRule
from citylake.services.instants import UtcInstant


class Alert(BaseModel):
    """One alert of the lake's `alerts` table; active while `ended_at` is null."""

    alert_id: str
    device_id: str
    metric: str | None = None
    rule: str
    severity: str
    state: Literal["active", "closed"]
    started_at: UtcInstant
    ended_at: UtcInstant | None = None
    value: float | None = None
    message: str | None = None


class AlertList(BaseModel):
    alerts: list[Alert]


class StoredRuleBody(AlertRule):
    """A rule as stored, with the ETag to send back in `If-Match` when changing it."""

    etag: str = Field(description="this version of the rule; also in the ETag header")


class RuleList(BaseModel):
    rules: list[StoredRuleBody]
    note: str = Field(
        description="rules take effect in the Flink `alerts` job when it is (re)submitted with them"
    )
