"""The outbox sender: delivers what the state committed, in order, within rate limits.

An entry is marked sent only after its receiver accepted it, so a crash between the two
repeats that one message on restart (at most one duplicate) and never loses it.

* Each receiver sends in outbox order, no faster than its ``min_interval`` (Slack allows
  about one message per second per channel): the limit is honoured, not discovered.
* Transient failures (429 with Retry-After, 5xx, timeouts, SMTP 4xx) are rescheduled with
  exponential backoff (or Retry-After) and stop that receiver's round, keeping order.
  Entries older than ``max_age`` are given up.
* Permanent failures (bad token, unknown channel, SMTP 5xx) are given up at once.
* A given-up entry is logged with the receiver's name, counted, and reported through the
  fallback receiver (bypassing the routing tree, which may be what is broken).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from taskwarden.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from taskwarden.health import HealthSettings, delivery_failed
from taskwarden.routing import fallback_destination
from taskwarden.state.protocol import AlertBatch, RoutedAlert
from taskwarden.timeutil import utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from datetime import datetime

    from taskwarden.notify.base import Notifier
    from taskwarden.state.protocol import OutboxItem, StateStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    max_age: timedelta = timedelta(hours=24)
    """A notification still undelivered after this long is given up (and reported)."""
    backoff_initial: timedelta = timedelta(seconds=5)
    backoff_max: timedelta = timedelta(minutes=10)
    fallback_receiver: str | None = None
    health: HealthSettings = field(default_factory=HealthSettings)


@dataclass(slots=True)
class DeliveryReport:
    sent: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())


def backoff(attempts: int, settings: DeliverySettings, retry_after: float | None) -> timedelta:
    """Retry-After when the receiver said it (bounded by ``backoff_max``), else doubling."""
    if retry_after is not None:
        return min(timedelta(seconds=retry_after), settings.backoff_max)
    doubled: timedelta = settings.backoff_initial * (2 ** min(attempts, 20))
    return min(doubled, settings.backoff_max)


class OutboxSender:
    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._notifiers = dict(notifiers)
        self._settings = settings or DeliverySettings()
        self._clock = clock
        self._sleep = sleep
        self._monotonic = monotonic
        self._next_slot: dict[str, float] = {}
        self._round = asyncio.Lock()
        """One delivery round at a time: the scheduled job and a shutdown drain must never
        both take the same entry (that would send it twice)."""
        self.totals = DeliveryReport()

    def replace_notifiers(
        self, notifiers: Mapping[str, Notifier], settings: DeliverySettings
    ) -> None:
        """After a configuration reload; pacing state is kept per receiver name."""
        self._notifiers = dict(notifiers)
        self._settings = settings

    async def deliver_due(self, *, limit: int = 500) -> DeliveryReport:
        """Flush due groups, then send every due entry once (or until its receiver fails)."""
        async with self._round:
            return await self._deliver_round(limit)

    async def _deliver_round(self, limit: int) -> DeliveryReport:
        self._store.flush(self._clock())
        items = self._store.due_notifications(self._clock(), limit)
        report = DeliveryReport()
        by_receiver: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_receiver.setdefault(item.receiver, []).append(item)
        await asyncio.gather(
            *(self._deliver_receiver(name, queue, report) for name, queue in by_receiver.items())
        )
        for mine, total in (
            (report.sent, self.totals.sent),
            (report.retried, self.totals.retried),
            (report.dead, self.totals.dead),
        ):
            total.update(mine)
        return report

    async def drain(self, within: float) -> bool:
        """Deliver until nothing is due or ``within`` seconds passed; True when empty."""
        deadline = self._monotonic() + within
        while self._monotonic() < deadline:
            report = await self.deliver_due()
            pending, _ = self._store.outbox_depth()
            if pending == 0:
                return True
            if not report.sent:
                await self._sleep(min(0.5, max(deadline - self._monotonic(), 0)))
        return self._store.outbox_depth()[0] == 0

    async def _deliver_receiver(
        self, receiver: str, queue: Sequence[OutboxItem], report: DeliveryReport
    ) -> None:
        notifier = self._notifiers.get(receiver)
        for item in queue:
            if notifier is None:
                self._give_up(item, f"receiver {receiver!r} is not configured", report)
                continue
            await self._pace(notifier)
            thread = self._store.thread_ref(item.group_id) if item.group_id is not None else None
            try:
                receipt = await notifier.send(item.notification, thread=thread)
            except TransientDeliveryError as exc:
                self._next_slot[receiver] = self._monotonic() + notifier.min_interval
                if self._clock() - item.created_at >= self._settings.max_age:
                    self._give_up(
                        item, f"undelivered after {self._settings.max_age}: {exc}", report
                    )
                    continue
                wait = backoff(item.attempts, self._settings, exc.retry_after)
                self._store.mark_retry(item, self._clock() + wait, str(exc))
                report.retried[receiver] += 1
                log.warning(
                    "delivery.retry_scheduled",
                    receiver=receiver,
                    outbox_id=item.outbox_id,
                    attempts=item.attempts + 1,
                    wait_seconds=wait.total_seconds(),
                    error=str(exc),
                )
                return  # keep this receiver's order: later entries wait for this one
            except PermanentDeliveryError as exc:
                self._next_slot[receiver] = self._monotonic() + notifier.min_interval
                self._give_up(item, str(exc), report)
                continue
            except DeliveryError as exc:  # a notifier raising the base class: treat as permanent
                self._give_up(item, str(exc), report)
                continue
            self._next_slot[receiver] = self._monotonic() + notifier.min_interval
            self._store.mark_sent(item, self._clock(), receipt.thread_ref)
            report.sent[receiver] += 1
            log.info(
                "delivery.sent",
                receiver=receiver,
                outbox_id=item.outbox_id,
                attempts=item.attempts + 1,
                follow_up=item.notification.follow_up,
            )

    async def _pace(self, notifier: Notifier) -> None:
        wait = self._next_slot.get(notifier.name, 0.0) - self._monotonic()
        if wait > 0:
            await self._sleep(wait)

    def _give_up(self, item: OutboxItem, reason: str, report: DeliveryReport) -> None:
        now = self._clock()
        self._store.mark_dead(item, now, reason)
        report.dead[item.receiver] += 1
        log.error(
            "delivery.given_up",
            receiver=item.receiver,
            outbox_id=item.outbox_id,
            attempts=item.attempts + 1,
            reason=reason,
        )
        fallback = self._settings.fallback_receiver
        if not fallback or fallback == item.receiver:
            return
        alert = delivery_failed(item.receiver, item.outbox_id, reason, now, self._settings.health)
        destination = fallback_destination(fallback, alert.labels)
        self._store.apply_alerts(AlertBatch(fired=(RoutedAlert(alert, (destination,)),)), now)
