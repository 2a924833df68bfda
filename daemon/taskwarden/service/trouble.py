"""The daemon's own trouble that its state cannot record: the state store refusing writes
(disk full, I/O errors), or delivery rounds failing.

Such a failure cannot go through the outbox (it may be what is broken), so it is

* logged, counted (``taskwarden_daemon_trouble_total{condition}``) and shown on
  ``/readyz`` while it lasts;
* told to the fallback receivers **directly**, bypassing the state and the outbox: a
  FIRING notice when it starts, a RESOLVED one when it ends, each retried every round until
  a fallback receiver accepts it (kept in memory, at most ``MAX_QUEUED``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import structlog

from taskwarden.alerts import Alert, Notification
from taskwarden.errors import DeliveryError
from taskwarden.health import health_labels

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from taskwarden.health import HealthSettings
    from taskwarden.outbox import Receiver

log = structlog.get_logger(__name__)

TROUBLE_RULE = "daemon_trouble"
MAX_QUEUED = 50
TITLES = {
    "state": "taskwarden cannot write its state: polling is paused, deliveries continue",
    "delivery": "taskwarden's delivery rounds are failing: notifications are not being sent",
}


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    since: datetime
    error: str


class Trouble:
    def __init__(
        self,
        *,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self._count = count
        self._active: dict[str, Condition] = {}
        self._queue: deque[Notification] = deque(maxlen=MAX_QUEUED)
        self._receivers: Mapping[str, Receiver] = {}
        self._fallbacks: Sequence[str] = ()
        self._health: HealthSettings | None = None
        self._redact: Callable[[Notification], Notification] = lambda n: n

    def configure(
        self,
        receivers: Mapping[str, Receiver],
        fallbacks: Sequence[str],
        health: HealthSettings,
        *,
        redact: Callable[[Notification], Notification] | None = None,
    ) -> None:
        """Who is told (at start and after every reload), with secrets taken out."""
        self._receivers = receivers
        self._fallbacks = fallbacks
        self._health = health
        if redact is not None:
            self._redact = redact

    def active(self) -> dict[str, Condition]:
        return dict(self._active)

    def failed(self, name: str, error: BaseException | str, now: datetime) -> None:
        """``name`` is failing; the first failure of an episode is told."""
        text = str(error) if not isinstance(error, str) else error
        if self._count is not None:
            self._count(name)
        known = self._active.get(name)
        self._active[name] = Condition(name, known.since if known else now, text)
        if known is not None:
            return
        log.error("daemon.trouble", condition=name, error=text)
        self._notify(name, text, now, resolved=False)

    def ok(self, name: str, now: datetime) -> None:
        known = self._active.pop(name, None)
        if known is None:
            return
        log.info("daemon.trouble_over", condition=name, since=known.since.isoformat())
        self._notify(name, known.error, now, resolved=True)

    def _notify(self, name: str, error: str, now: datetime, *, resolved: bool) -> None:
        if self._health is None or not self._fallbacks:
            return
        alert = Alert(
            key=f"daemon/{name}",
            rule=TROUBLE_RULE,
            source="taskwarden",
            severity=self._health.severity,
            labels=health_labels(self._health, "taskwarden", TROUBLE_RULE, name),
            title=TITLES.get(name, f"taskwarden trouble: {name}"),
            one_shot=False,
            starts_at=now,
            note=f"error: {error}",
        )
        if resolved:
            alert = alert.resolved(now, f"over; it had failed with: {error}")
        self._queue.append(
            Notification(
                receiver="",
                group_key=f"daemon/{name}",
                group_labels=alert.labels,
                firing=() if resolved else (alert,),
                resolved=(alert,) if resolved else (),
                firing_total=0 if resolved else 1,
                resolved_total=1 if resolved else 0,
                new_total=0 if resolved else 1,
                created_at=now,
            )
        )

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def tell(self) -> None:
        """Send what is queued, oldest first, to the first fallback that accepts it."""
        while self._queue:
            notice = self._queue[0]
            if not await self._deliver(notice):
                return
            self._queue.popleft()

    async def _deliver(self, notice: Notification) -> bool:
        for name in self._fallbacks:
            receiver = self._receivers.get(name)
            if receiver is None:
                continue
            try:
                async with asyncio.timeout(receiver.attempt_timeout):
                    addressed = self._redact(replace(notice, receiver=name))
                    await receiver.notifier.send(addressed, thread=None)
            except Exception as exc:  # noqa: BLE001 - try the next fallback, whatever failed
                log.warning(
                    "daemon.trouble_notice_failed",
                    receiver=name,
                    error=str(exc) if isinstance(exc, DeliveryError) else repr(exc),
                )
                continue
            log.info("daemon.trouble_notice_sent", receiver=name, group=notice.group_key)
            return True
        return False
