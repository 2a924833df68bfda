"""The delivery ports: what the outbox sender consumes.

* `Notifier`: a medium (Slack, e-mail, the console) that delivers one notification, and
  raises `DeliveryError`s — never returns a bool; implemented in ``notify/``.
* `Outbox`: where notifications wait, and the threads they go into; implemented by the
  state backends (``state/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Container
    from datetime import datetime

    from taskwarden.alerts import Notification
    from taskwarden.routing import AlertBatch


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


@dataclass(frozen=True, slots=True)
class OutboxItem:
    outbox_id: int
    receiver: str
    thread_key: str | None
    """The group's never-reused identity: follow-ups go into its thread."""
    notification: Notification
    created_at: datetime
    attempts: int


class Outbox(Protocol):
    """Notifications waiting to be delivered, and the threads they go into."""

    def flush(self, now: datetime, *, force: bool = False) -> list[Notification]:
        """Turn every due group into at most one outbox entry."""
        ...

    def enqueue(self, notification: Notification, now: datetime) -> int: ...

    def due_notifications(
        self, now: datetime, limit: int = 500, receivers: Container[str] | None = None
    ) -> list[OutboxItem]:
        """Per receiver (of ``receivers``, or all), its pending entries in order, while its
        oldest one is due."""
        ...

    def thread_ref(self, thread_key: str) -> str | None: ...

    def mark_sent(self, item: OutboxItem, now: datetime, thread_ref: str | None) -> None: ...

    def mark_retry(self, item: OutboxItem, next_attempt: datetime, error: str) -> None: ...

    def mark_dead(
        self, item: OutboxItem, now: datetime, error: str, notice: AlertBatch | None = None
    ) -> None:
        """Give the entry up and, in the same transaction, raise ``notice``."""
        ...

    def outbox_depth(self) -> tuple[int, datetime | None]:
        """Pending notifications and the creation time of the oldest."""
        ...
