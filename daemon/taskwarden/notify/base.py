"""What every notifier shares (the port they implement is `taskwarden.delivery.Notifier`)."""

from __future__ import annotations


class NotifierBase:
    """The name every notifier carries (pacing is the outbox's, per receiver)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name
