"""The state's ports and the records that cross them.

The pipeline uses narrow ports — `TaskStore` (tasks, checkpoints, the cycle's commit),
`AlertStore` (alerts and groups), `Outbox` (notifications and threads), `SilenceStore` — and
one backend provides them all (`StateStore`). Each port has one contract test suite, run over
every backend (``tests/test_store_contract.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime, timedelta

    from taskwarden.alerts import Alert, Labels, Notification
    from taskwarden.diff import Event
    from taskwarden.model import SourceView, Task
    from taskwarden.routing import AlertBatch, Silence

from taskwarden.delivery import Outbox


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to poll a source (or deliver a receiver's outbox) among replicas.

    A cycle's commit checks, in its own transaction, that its lease is still at this epoch:
    a replica that lost it (paused, cut off) can never commit a stale cycle."""

    name: str
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """Who holds a lease, for `taskwarden state` and readiness. ``owner`` None: released,
    at ``expires``."""

    name: str
    owner: str | None
    epoch: int
    expires: datetime


@dataclass(frozen=True, slots=True)
class CycleCommit:
    """Everything one successful poll changes, written in a single transaction."""

    checkpoint: datetime
    events: Sequence[Event]
    now: datetime
    baseline: bool
    """First poll of a fresh state: terminal history is recorded, not reported."""
    strategy: str = ""
    api_calls: int = 0
    prune_before: datetime | None = None
    """Terminal tasks received before this moment leave the state."""
    alerts: AlertBatch | None = None
    flush: bool = True
    """Turn due groups into outbox entries in the same transaction."""
    lease: Lease | None = None
    """The lease the cycle was polled under: the commit is refused once it moved on."""


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    checkpoint: datetime | None
    last_success: datetime | None
    last_strategy: str
    last_api_calls: int
    tasks_by_status: dict[str, int]
    open_tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class StateSummary:
    path: str
    schema_version: int
    sources: tuple[SourceStatus, ...]
    journal_entries: int
    leases: tuple[LeaseHolder, ...] = ()


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """Where an alert waits to be told: one receiver's group."""

    receiver: str
    told: str
    """What that receiver was told: ``firing``, ``resolved``, or empty (not yet)."""
    group_labels: Labels
    last_sent: datetime | None = None
    """When the group's last message was sent."""


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert as the status page and ``taskwarden alerts`` show it."""

    alert: Alert
    outcome: str
    """How it ended in its groups (``sent``, ``silenced``, ``inhibited``, ``unrouted``,
    …); empty while it is pending."""
    updated: datetime
    receivers: tuple[AlertDelivery, ...] = ()
    """The groups it is in (a failure leaves its group once its message is queued)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message in a receiver's queue: waiting, retrying, sent or given up."""

    entry_id: int
    receiver: str
    state: str
    """``pending`` (waiting, or retrying when ``attempts`` > 0), ``sent`` or ``dead``."""
    attempts: int
    created: datetime
    next_attempt: datetime
    notification: Notification | None
    """None when the stored message cannot be read."""
    last_error: str | None = None
    done: datetime | None = None


class TaskStore(Protocol):
    """Tasks and checkpoints: what a poll cycle reads, and its one write."""

    def source_view(self, source: str) -> SourceView: ...

    def needs_baseline(self, source: str) -> bool:
        """True until the first poll of a fresh state is committed."""
        ...

    def tracked(self, source: str, task_ids: Iterable[str]) -> dict[str, Task]: ...

    def recent_failures(self, source: str, since: datetime) -> list[tuple[datetime, Task]]:
        """Failures observed (not in a baseline) since ``since``, oldest first."""
        ...

    def commit_cycle(
        self, source: str, commit: CycleCommit, *, dry_run: bool = False
    ) -> list[Notification]:
        """Write the cycle — tasks, journal, checkpoint, its alerts, the outbox entries it
        makes due — in one transaction. ``dry_run`` computes the same and rolls it back:
        the returned notifications are what the cycle would send."""
        ...

    def record_poll_failure(self, source: str, now: datetime, error: str) -> datetime:
        """Remember a failed poll; returns since when the source has been failing."""
        ...

    def task_counts(self) -> dict[tuple[str, str], int]:
        """Tracked tasks per (source, status)."""
        ...

    def summary(self) -> StateSummary: ...


class AlertStore(Protocol):
    """Alerts and the notification groups they are in."""

    def active_alerts(self, source: str) -> dict[str, Alert]:
        """Firing stateful alerts of ``source``, by key."""
        ...

    def apply_alerts(self, batch: AlertBatch, now: datetime) -> list[Notification]:
        """Record fired and resolved alerts in their groups; returns what became due."""
        ...


class SilenceStore(Protocol):
    def silences(self) -> list[Silence]: ...

    def add_silence(self, silence: Silence) -> None: ...

    def expire_silence(self, silence_id: str, now: datetime) -> bool: ...

    def sync_config_silences(self, silences: Sequence[Silence]) -> None:
        """Replace the silences that come from the configuration (not the added ones)."""
        ...


class StatusStore(Protocol):
    """What operators read: alerts with their outcome, and the outbox."""

    def alert_records(self, since: datetime, limit: int = 500) -> list[AlertRecord]:
        """Stateful alerts still firing, and every alert changed since ``since``; newest
        change first, at most ``limit``."""
        ...

    def outbox_entries(self, since: datetime, limit: int = 200) -> list[OutboxEntry]:
        """Entries still to be sent, and those sent or given up since ``since``; newest
        first, at most ``limit``."""
        ...


class LeaseStore(Protocol):
    """Who polls which source and delivers which receiver's outbox, among replicas."""

    exclusive: bool
    """One process at a time by construction (SQLite's file lock): every lease is ours."""

    def claim(
        self,
        owner: str,
        names: Iterable[str],
        now: datetime,
        ttl: timedelta,
        *,
        release: Iterable[str] = (),
        leaving: bool = False,
    ) -> dict[str, Lease]:
        """Renew or take ``names`` (another owner's only once expired), give up
        ``release``, and mark ``owner`` alive (``leaving``: gone); returns what ``owner``
        holds now."""
        ...

    def live_replicas(self, now: datetime, ttl: timedelta) -> list[str]:
        """Owners that claimed within ``ttl``, in order."""
        ...

    def lease_holders(self) -> list[LeaseHolder]: ...


class PollStore(TaskStore, AlertStore, Protocol):
    """What a poll cycle uses: its tasks, and the alerts its rules read and write."""


class StateStore(TaskStore, AlertStore, Outbox, SilenceStore, LeaseStore, StatusStore, Protocol):
    """Every port of the state, as one backend provides them."""

    def probe_write(self) -> None:
        """A tiny durable write; raises `StateError` while the state cannot be written."""
        ...

    def close(self) -> None: ...
