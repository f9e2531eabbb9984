"""Routing keys to ids. Pure: no I/O. Bodies are decoded by the MQTT
adapter's ``JsonReadingsCodec`` (the same shapes and reasons as MQTT and
HTTP push)."""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


class RoutingKeyTemplate:
    """``city.{district}.{device_type}.{device_id}.telemetry``: placeholders
    are whole dot-separated words of the routing key."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.words = template.split(".")
        self.names: list[str | None] = []
        for word in self.words:
            match = _PLACEHOLDER.match(word)
            self.names.append(match.group(1) if match else None)

    def match(self, routing_key: str) -> dict[str, str] | None:
        parts = routing_key.split(".")
        if len(parts) != len(self.words):
            return None
        values: dict[str, str] = {}
        for part, word, name in zip(parts, self.words, self.names, strict=True):
            if name is None:
                if part != word:
                    return None
            elif not part:
                return None
            else:
                values[name] = part
        return values
