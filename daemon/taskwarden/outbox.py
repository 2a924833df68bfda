"""The outbox sender: delivers what the state committed, in order, within rate limits.

An entry is marked sent only after its receiver accepted it, so a crash between the two
repeats that one message on restart (at most one duplicate) and never loses it.

* **Each receiver is a FIFO.** Its entries are sent in outbox order; an entry waiting for a
  retry holds back every later one of the same receiver (a RESOLVED never overtakes its
  FIRING). The store hands out a receiver's entries only while its oldest is due.
* **Each target is paced and paused.** A target is what a rate limit applies to (a Slack
  channel, an SMTP server): no two messages closer than ``min_interval``, and a
  ``Retry-After`` pauses the whole target, every receiver on it, until it passes.
* Transient failures (429, 5xx, timeouts, SMTP 4xx) are retried with exponential backoff
  (or Retry-After) until ``max_age``; permanent ones (bad token, unknown channel, SMTP 5xx),
  and a message that cannot even be built, are given up at once. Every attempt has a hard
  deadline.
* A given-up entry is logged with the receiver's name, counted, and reported to a fallback
  receiver (bypassing the routing tree, which may be what is broken), naming the alerts
  that were lost.
* **Bookkeeping never causes a resend.** When the state cannot record that a message was
  sent (disk full), the sender remembers it, never sends it again, and retries the write
  each round; the failure is reported through ``on_state_error``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from taskwarden.alerts import Alert
from taskwarden.errors import (
    DeliveryError,
    PermanentDeliveryError,
    StateError,
    TransientDeliveryError,
)
from taskwarden.health import DELIVERY_RULE, HealthSettings, health_labels
from taskwarden.routing import AlertBatch, RoutedAlert, fallback_destination
from taskwarden.timeutil import utc_now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
    from datetime import datetime

    from taskwarden.alerts import Notification
    from taskwarden.delivery import Notifier, Outbox, OutboxItem, Receipt

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    max_age: timedelta = timedelta(hours=24)
    """A notification still undelivered after this long is given up (and reported)."""
    backoff_initial: timedelta = timedelta(seconds=5)
    backoff_max: timedelta = timedelta(minutes=10)
    fallback_receivers: tuple[str, ...] = ()
    """Told when a notification is given up: the first one that is not the failing one."""
    health: HealthSettings = field(default_factory=HealthSettings)


@dataclass(frozen=True, slots=True)
class Receiver:
    """A notifier and how the outbox paces it."""

    notifier: Notifier
    min_interval: float = 0.0
    """Seconds between two messages to the target: the medium's rate limit, honoured."""
    target: str = ""
    """What rate limits apply to (a Slack channel, an SMTP server); default: the receiver."""
    attempt_timeout: float = 60.0
    """Hard bound on one delivery attempt, whatever the notifier's own timeouts do."""


@dataclass(slots=True)
class DeliveryReport:
    sent: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    def add(self, other: DeliveryReport) -> None:
        self.sent.update(other.sent)
        self.retried.update(other.retried)
        self.dead.update(other.dead)


MAX_LOST_LISTED = 10


def delivery_failed(
    item: OutboxItem, reason: str, now: datetime, settings: HealthSettings
) -> Alert:
    """A one-shot alert for the fallback receiver: a notification was given up on, and
    this is what it said (rules, titles, task ids), so nothing is lost silently."""
    lost = (*item.notification.firing, *item.notification.resolved)
    lines = [f"reason: {reason}"]
    for alert in lost[:MAX_LOST_LISTED]:
        tasks = ", ".join(t.task_id for t in alert.tasks[:5])
        state = "resolved" if alert.state.value == "resolved" else "firing"
        lines.append(
            f"lost ({state}, rule {alert.rule}): {alert.title}"
            + (f" [tasks {tasks}]" if tasks else "")
        )
    hidden = item.notification.firing_total + item.notification.resolved_total - len(lost)
    if len(lost) > MAX_LOST_LISTED or hidden > 0:
        more = max(len(lost) - MAX_LOST_LISTED, 0) + max(hidden, 0)
        lines.append(f"… and {more} more alerts of group {item.notification.group_key}")
    labels = {
        **dict(health_labels(settings, "taskwarden", DELIVERY_RULE, "delivery")),
        "receiver": item.receiver,
    }
    return Alert(
        key=f"health/delivery/{item.receiver}/{item.outbox_id}",
        rule=DELIVERY_RULE,
        source="taskwarden",
        severity=settings.severity,
        labels=tuple(sorted(labels.items())),
        title=(
            f"A notification to receiver {item.receiver} was given up: "
            f"{len(lost) or 'its'} alert(s) not delivered"
        ),
        one_shot=True,
        starts_at=now,
        tasks=tuple(t for a in lost[:MAX_LOST_LISTED] for t in a.tasks)[:5],
        note="\n".join(lines),
    )


def backoff(attempts: int, settings: DeliverySettings, retry_after: float | None) -> timedelta:
    """What the receiver asked for (Retry-After), else doubling up to ``backoff_max``."""
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    doubled: timedelta = settings.backoff_initial * (2 ** min(attempts, 20))
    return min(doubled, settings.backoff_max)


class OutboxSender:
    def __init__(
        self,
        store: Outbox,
        receivers: Mapping[str, Receiver],
        settings: DeliverySettings | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_state_error: Callable[[StateError], None] | None = None,
        redact: Callable[[Notification], Notification] | None = None,
        deliver_to: Callable[[], Container[str]] | None = None,
    ) -> None:
        """``deliver_to``: the receivers this replica delivers (its leases); all if None."""
        self._store = store
        self._deliver_to = deliver_to
        self._receivers = dict(receivers)
        self._settings = settings or DeliverySettings()
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._on_state_error = on_state_error
        self._redact = redact
        self._next_slot: dict[str, float] = {}
        """Per target: monotonic time of the next allowed message (``min_interval``)."""
        self._paused_until: dict[str, datetime] = {}
        """Per target: until when a Retry-After pauses it (the clock of ``next_attempt``)."""
        self._targets: dict[str, asyncio.Lock] = {}
        self._unrecorded: dict[int, Callable[[], None]] = {}
        """Outbox ids sent (or given up) whose bookkeeping could not be written yet."""
        self._threads: dict[str, str] = {}
        """Thread references learned from sends whose bookkeeping is still unwritten."""
        self._round = asyncio.Lock()
        """One delivery round at a time: the scheduled job and a shutdown drain must never
        both take the same entry (that would send it twice)."""
        self.totals = DeliveryReport()

    def replace_receivers(
        self, receivers: Mapping[str, Receiver], settings: DeliverySettings
    ) -> None:
        """After a configuration reload; pacing and pauses are kept per target."""
        self._receivers = dict(receivers)
        self._settings = settings

    @property
    def unrecorded(self) -> int:
        """Deliveries whose bookkeeping is waiting for the state to be writable again."""
        return len(self._unrecorded)

    async def deliver_due(self, *, limit: int = 500) -> DeliveryReport:
        """Flush due groups, then send each receiver's due entries, in order."""
        async with self._round:
            report = await self._deliver_round(limit)
        self.totals.add(report)
        return report

    async def _deliver_round(self, limit: int) -> DeliveryReport:
        report = DeliveryReport()
        self._record_pending()
        try:
            self._store.flush(self._clock())
        except StateError as exc:  # what is already in the outbox still goes out
            self._state_failed(exc)
        items = [
            item
            for item in self._store.due_notifications(
                self._clock(),
                limit,
                receivers=self._deliver_to() if self._deliver_to is not None else None,
            )
            if item.outbox_id not in self._unrecorded
        ]
        by_receiver: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_receiver.setdefault(item.receiver, []).append(item)
        await asyncio.gather(
            *(self._deliver_receiver(name, queue, report) for name, queue in by_receiver.items())
        )
        return report

    async def drain(self, within: float) -> bool:
        """Deliver until nothing is due or ``within`` seconds passed; True when empty.

        A hard bound: a round still running at the deadline is cancelled (a message whose
        answer was cut off may be sent once more at the next start, never lost)."""
        try:
            async with asyncio.timeout(max(within, 0.0)):
                while True:
                    report = await self.deliver_due()
                    if self._store.outbox_depth()[0] == 0:
                        return True
                    if not report.sent:
                        await self._sleep(0.2)
        except TimeoutError:
            return False

    # --- one receiver -------------------------------------------------------------------------

    def _still_mine(self, receiver: str) -> bool:
        """Before each send: this replica still delivers ``receiver`` (its lease is held and
        usable), so a replica that lost it sends at most the one message in flight again."""
        return self._deliver_to is None or receiver in self._deliver_to()

    async def _deliver_receiver(
        self, name: str, queue: Sequence[OutboxItem], report: DeliveryReport
    ) -> None:
        receiver = self._receivers.get(name)
        for item in queue:
            if not self._still_mine(name):
                return  # the lease moved on (this replica was paused or cut off): stop here
            if receiver is None:
                self._give_up(item, f"receiver {name!r} is not configured", report)
                continue
            target = receiver.target or name
            # Receivers sharing a target (two on one Slack channel) take turns at it.
            async with self._targets.setdefault(target, asyncio.Lock()):
                paused = self._paused_until.get(target)
                if paused is not None and self._clock() < paused:
                    return  # the target is paused (Retry-After): keep this receiver's order
                wait = self._next_slot.get(target, 0.0) - self._monotonic()
                if wait > 0:
                    await self._sleep(wait)
                outcome = await self._attempt(item, receiver)
                self._next_slot[target] = self._monotonic() + receiver.min_interval
            if isinstance(outcome, TransientDeliveryError):
                if self._clock() - item.created_at >= self._settings.max_age:
                    self._give_up(
                        item, f"undelivered after {self._settings.max_age}: {outcome}", report
                    )
                    continue
                self._retry_later(item, target, outcome, report)
                return  # later entries of this receiver wait for this one
            if isinstance(outcome, Exception):
                self._give_up(item, str(outcome), report)
                continue
            self._sent(item, outcome, report)

    async def _attempt(
        self, item: OutboxItem, receiver: Receiver
    ) -> Receipt | TransientDeliveryError | Exception:
        """One send within the hard deadline; the outcome, never an exception."""
        notification = item.notification
        if self._redact is not None:
            notification = self._redact(notification)
        thread = self._thread_ref(item.thread_key) if item.thread_key else None
        name = item.receiver
        try:
            async with asyncio.timeout(receiver.attempt_timeout):
                return await receiver.notifier.send(notification, thread=thread)
        except TimeoutError:
            return TransientDeliveryError(
                f"no answer within {receiver.attempt_timeout:g}s", receiver=name
            )
        except (TransientDeliveryError, PermanentDeliveryError) as exc:
            return exc
        except DeliveryError as exc:  # a notifier raising the base class: treat as permanent
            return PermanentDeliveryError(str(exc), receiver=name)
        except Exception as exc:
            log.exception("delivery.unexpected_error", receiver=name, outbox_id=item.outbox_id)
            return PermanentDeliveryError(
                f"the message could not be delivered: {type(exc).__name__}: {exc}",
                receiver=name,
            )

    def _thread_ref(self, thread_key: str) -> str | None:
        remembered = self._threads.get(thread_key)
        if remembered is not None:
            return remembered
        try:
            return self._store.thread_ref(thread_key)
        except StateError as exc:
            self._state_failed(exc)
            return None

    def _sent(self, item: OutboxItem, receipt: Receipt, report: DeliveryReport) -> None:
        now = self._clock()
        if receipt.thread_ref and item.thread_key:
            self._threads.setdefault(item.thread_key, receipt.thread_ref)
        report.sent[item.receiver] += 1
        log.info(
            "delivery.sent",
            receiver=item.receiver,
            outbox_id=item.outbox_id,
            attempts=item.attempts + 1,
            follow_up=item.notification.follow_up,
        )

        def record() -> None:
            self._store.mark_sent(item, now, receipt.thread_ref)
            if item.thread_key:
                self._threads.pop(item.thread_key, None)

        self._bookkeep(item.outbox_id, record)

    def _retry_later(
        self,
        item: OutboxItem,
        target: str,
        exc: TransientDeliveryError,
        report: DeliveryReport,
    ) -> None:
        wait = backoff(item.attempts, self._settings, exc.retry_after)
        if exc.retry_after is not None:
            until = self._clock() + wait
            self._paused_until[target] = max(self._paused_until.get(target, until), until)
        report.retried[item.receiver] += 1
        log.warning(
            "delivery.retry_scheduled",
            receiver=item.receiver,
            outbox_id=item.outbox_id,
            attempts=item.attempts + 1,
            wait_seconds=wait.total_seconds(),
            error=str(exc),
        )
        try:
            self._store.mark_retry(item, self._clock() + wait, str(exc))
        except StateError as failure:  # the in-memory pause still holds the target
            self._state_failed(failure)

    def _give_up(self, item: OutboxItem, reason: str, report: DeliveryReport) -> None:
        now = self._clock()
        report.dead[item.receiver] += 1
        log.error(
            "delivery.given_up",
            receiver=item.receiver,
            outbox_id=item.outbox_id,
            attempts=item.attempts + 1,
            reason=reason,
        )
        notice = self._fallback_notice(item, reason, now)
        self._bookkeep(item.outbox_id, lambda: self._store.mark_dead(item, now, reason, notice))

    def _fallback_notice(self, item: OutboxItem, reason: str, now: datetime) -> AlertBatch | None:
        """The alert telling a fallback receiver what was lost, if one can be told."""
        lost = (*item.notification.firing, *item.notification.resolved)
        about_notices = bool(lost) and all(a.rule == DELIVERY_RULE for a in lost)
        excluded = {item.receiver}
        if about_notices:  # a lost notice: not back to the receiver it was about
            excluded.update(a.label("receiver") or "" for a in lost)
        fallback = next((f for f in self._settings.fallback_receivers if f not in excluded), None)
        if fallback is None:
            log.critical(
                "delivery.lost_without_fallback",
                receiver=item.receiver,
                outbox_id=item.outbox_id,
                reason=reason,
                fallbacks=list(self._settings.fallback_receivers),
            )
            return None
        alert = delivery_failed(item, reason, now, self._settings.health)
        return AlertBatch(
            fired=(RoutedAlert(alert, (fallback_destination(fallback, alert.labels),)),)
        )

    # --- bookkeeping ----------------------------------------------------------------------------

    def _bookkeep(self, outbox_id: int, write: Callable[[], None]) -> None:
        """Write what happened to an entry; if the state refuses, remember it and retry the
        write each round: the entry is never handed out (and sent) again meanwhile."""
        try:
            write()
        except StateError as exc:
            self._unrecorded[outbox_id] = write
            self._state_failed(exc)

    def _record_pending(self) -> None:
        for outbox_id, write in list(self._unrecorded.items()):
            try:
                write()
            except StateError as exc:
                self._state_failed(exc)
                return
            del self._unrecorded[outbox_id]
            log.info("delivery.bookkeeping_recorded", outbox_id=outbox_id)

    def _state_failed(self, exc: StateError) -> None:
        log.error("delivery.state_write_failed", error=str(exc))
        if self._on_state_error is not None:
            self._on_state_error(exc)
