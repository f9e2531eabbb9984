"""Online/offline of a polled meter, from whether its polls get answers.

A polled meter says nothing when it is gone: the poller only notices that a
poll went unanswered. One missed poll is noise on an RS-485 line; ``offline_after``
missed polls in a row make the meter offline (one ``offline`` event), and the
first answer after that (or the very first answer) makes it online (one
``online`` event). Pure: the adapter turns the returned kind into a
``device_events`` row.
"""

from __future__ import annotations

from citylake.schemas import EventKind


class MeterPresence:
    def __init__(self, offline_after: int) -> None:
        if offline_after < 1:
            raise ValueError("offline_after must be at least 1")
        self.offline_after = offline_after
        self.online: bool | None = None  # unknown until the first poll decides
        self.missed_in_a_row = 0

    def answered(self) -> EventKind | None:
        """A poll got at least one answer (an error reply is an answer too)."""
        self.missed_in_a_row = 0
        if self.online is not True:
            self.online = True
            return EventKind.ONLINE
        return None

    def missed(self) -> EventKind | None:
        """A poll got no answer at all."""
        self.missed_in_a_row += 1
        if self.missed_in_a_row >= self.offline_after and self.online is not False:
            self.online = False
            return EventKind.OFFLINE
        return None
