"""Alert events: ``opened`` and ``closed``, each published once per alert.

A background task polls the lake's ``alerts`` table and publishes what changed
on the ``alerts`` topic. What was published is remembered in the state store,
one entry per alert (``alert-events:<alert_id>`` = ``{"opened": .., "closed": ..}``),
so a restarted service publishes only what it has not published before: on its
first poll it reads the entries of the alerts it sees in one bulk read.

Delivery is at least once: an event is published, then remembered, so a crash
between the two publishes it again after the restart. Each event has a stable
id (``<alert_id>:opened``, the CloudEvent ``id``) for subscribers to drop such
a repeat. Run one announcer per state store: two would both publish.

Only alerts that are active, or that closed within ``lookback_s``, are
announced; older history is the lake's, not an event. A closed alert's entry
expires after the same time (store TTL), so the store holds about one day of
alerts, plus the open ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter

from citylake.services.alerts.history import alerts_to_announce
from citylake.services.alerts.models import Alert
from citylake.services.lakeaccess import LakeOnDemand
from citylake.services.publish import Publisher
from citylake.services.state import StateStore

log = logging.getLogger(__name__)

EVENT_KEY_PREFIX = "alert-events:"
Event = Literal["opened", "closed"]


def event_key(alert_id: str) -> str:
    return EVENT_KEY_PREFIX + alert_id


def event_body(alert: dict[str, Any], event: Event) -> dict[str, Any]:
    """What subscribers receive: the alert as ``GET /v1/alerts`` shows it, plus the event."""
    body = Alert(**alert).model_dump(mode="json")
    return {"event": event, "event_id": f"{alert['alert_id']}:{event}", **body}


@dataclass(frozen=True)
class AnnouncerMetrics:
    published: Counter
    failures: Counter

    @classmethod
    def register(cls, registry: CollectorRegistry) -> AnnouncerMetrics:
        return cls(
            published=Counter(
                "citylake_alerts_events_published", "alert events published", ["event"], registry=registry
            ),
            failures=Counter(
                "citylake_alerts_poll_failures",
                "polls that failed (lake, store or pub/sub)",
                registry=registry,
            ),
        )


class AlertAnnouncer:
    def __init__(
        self,
        lake: LakeOnDemand,
        store: StateStore,
        publisher: Publisher,
        topic: str = "alerts",
        lookback_s: float = 86_400.0,
        metrics: AnnouncerMetrics | None = None,
    ) -> None:
        self.lake = lake
        self.store = store
        self.publisher = publisher
        self.topic = topic
        self.lookback_s = lookback_s
        # An hour beyond the lookback: the entry must outlive the alert's candidacy.
        self.closed_ttl_s = int(lookback_s) + 3600
        self._known: dict[str, dict[str, bool]] = {}
        self.last_poll_at: float | None = None
        self.last_error: str | None = None
        self.metrics = metrics or AnnouncerMetrics.register(CollectorRegistry())

    def _read(self, horizon: datetime) -> list[dict[str, Any]]:
        cursor = self.lake.cursor()
        try:
            return alerts_to_announce(cursor, horizon)
        finally:
            cursor.close()

    async def _recall(self, alert_ids: list[str]) -> None:
        stored = await self.store.get_many([event_key(i) for i in alert_ids])
        for alert_id in alert_ids:
            entry = stored.get(event_key(alert_id))
            value = entry.value if entry is not None and isinstance(entry.value, dict) else {}
            self._known[alert_id] = {"opened": bool(value.get("opened")), "closed": bool(value.get("closed"))}

    async def _announce(self, alert: dict[str, Any], event: Event) -> None:
        alert_id = alert["alert_id"]
        await self.publisher.publish(
            self.topic, f"{alert_id}:{event}", f"citylake.alert.{event}", event_body(alert, event)
        )
        done = {**self._known[alert_id], event: True}
        ttl = self.closed_ttl_s if done["closed"] else None
        await self.store.save(event_key(alert_id), done, ttl_s=ttl)
        self._known[alert_id] = done
        self.metrics.published.labels(event).inc()

    async def poll_once(self, now: datetime | None = None) -> int:
        """Publish what changed since the last poll; returns the number of events."""
        horizon = (now or datetime.now(UTC)) - timedelta(seconds=self.lookback_s)
        alerts = await asyncio.to_thread(self._read, horizon)
        unknown = [a["alert_id"] for a in alerts if a["alert_id"] not in self._known]
        if unknown:
            await self._recall(unknown)
        published = 0
        for alert in alerts:
            done = self._known[alert["alert_id"]]
            if not done["opened"]:
                await self._announce(alert, "opened")
                published += 1
            if alert["ended_at"] is not None and not done["closed"]:
                await self._announce(alert, "closed")
                published += 1
        # Forget alerts that left the window: the lake will not offer them again.
        self._known = {a["alert_id"]: self._known[a["alert_id"]] for a in alerts}
        return published

    async def poll_and_note(self) -> None:
        """One poll whose failure (lake, sidecar, broker) is logged, counted and
        kept for /healthz instead of raised: the next poll retries what was not published."""
        try:
            count = await self.poll_once()
        except Exception as exc:  # the loop outlives any one failure; the reason is kept for /healthz
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.metrics.failures.inc()
            log.warning("alerts: poll failed, will retry: %s", self.last_error)
        else:
            self.last_error = None
            if count:
                log.info("alerts: published %d alert events", count)
        self.last_poll_at = time.time()

    async def run(self, every_s: float) -> None:
        """Poll forever, every ``every_s``."""
        while True:
            await self.poll_and_note()
            await asyncio.sleep(every_s)
