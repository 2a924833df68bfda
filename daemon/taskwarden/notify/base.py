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

    @property
    def min_interval(self) -> float:
        """Seconds between two messages: the medium's rate limit, honoured by the sender."""
        ...

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:
        """Deliver, or raise `TransientDeliveryError` / `PermanentDeliveryError`."""
        ...

    async def check(self) -> str:
        """Prove the credentials work (Slack ``auth.test``, SMTP login); a line for humans."""
        ...


class NotifierBase:
    """The name and pacing every notifier carries."""

    def __init__(self, name: str, *, min_interval: float = 0.0) -> None:
        self._name = name
        self._min_interval = min_interval

    @property
    def name(self) -> str:
        return self._name

    @property
    def min_interval(self) -> float:
        return self._min_interval
