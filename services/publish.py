"""The publisher port: events out to a pub/sub topic.

``DaprPublisher`` publishes through the sidecar (MQTT in
``deploy/dapr/components/pubsub.yaml``); Dapr wraps each event in a CloudEvent
whose ``id`` and ``type`` are the event's own, so a subscriber can drop the rare
repeat (delivery is at least once). Without a sidecar ``EmbeddedPublisher``
keeps the most recent events in memory and logs them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from citylake.services.sidecar import DaprSidecar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedEvent:
    topic: str
    event_id: str
    event_type: str
    data: Mapping[str, Any]


class Publisher(Protocol):
    async def publish(self, topic: str, event_id: str, event_type: str, data: Mapping[str, Any]) -> None:
        """Raises when the event was not accepted, so the caller can try again."""
        ...


class DaprPublisher:
    def __init__(self, sidecar: DaprSidecar, pubsub: str, source: str) -> None:
        self.sidecar = sidecar
        self.pubsub = pubsub
        self.source = source

    async def publish(self, topic: str, event_id: str, event_type: str, data: Mapping[str, Any]) -> None:
        metadata = {
            "cloudevent.id": event_id,
            "cloudevent.type": event_type,
            "cloudevent.source": self.source,
        }
        await self.sidecar.publish(self.pubsub, topic, data, metadata)


class EmbeddedPublisher:
    """For a service run alone: events stay visible in the log and in ``recent``."""

    def __init__(self, keep: int = 1000) -> None:
        self.recent: deque[PublishedEvent] = deque(maxlen=keep)

    async def publish(self, topic: str, event_id: str, event_type: str, data: Mapping[str, Any]) -> None:
        self.recent.append(PublishedEvent(topic, event_id, event_type, data))
        log.info("event %s on %s (no sidecar: kept in memory): %s", event_id, topic, dict(data))
