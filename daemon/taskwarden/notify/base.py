"""The `Notifier` protocol. Notifiers raise `DeliveryError`s; they never return a bool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from taskwarden.alerts import Notification


@dataclass(frozen=True, slots=True)
class Receipt:
    thread_ref: str | None = None
    """Where follow-ups of the same group go (a Slack message ``ts``), if the medium threads."""


class Notifier(Protocol):
    @property
    def name(self) -> str: ...

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:
        """Deliver, or raise `TransientDeliveryError` / `PermanentDeliveryError`."""
        ...

    async def check(self) -> str:
        """Prove the credentials work (Slack ``auth.test``, SMTP login); a line for humans."""
        ...


class NotifierBase:
    """The name every notifier carries (pacing is the outbox's, per receiver)."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name
