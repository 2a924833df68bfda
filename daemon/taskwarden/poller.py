"""One poll cycle of one source: view → observe → diff → rules → routing → one commit.

Nothing is written unless the whole scan succeeded: a failed page raises before the
commit, and the next cycle repeats the same scope from the unchanged checkpoint. The
alerts the cycle causes, and the outbox entries that become due, are written in the same
transaction as the state change.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from taskwarden.alerting import Alerting
from taskwarden.diff import StatusChanged, TaskAppeared, TaskGone, diff, is_change
from taskwarden.errors import SourceError
from taskwarden.health import source_health
from taskwarden.rules import RuleInput, evaluate, wants_details
from taskwarden.state.protocol import CycleCommit

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from taskwarden.alerts import Notification
    from taskwarden.diff import Event
    from taskwarden.model import Task, TaskDetails
    from taskwarden.sources.base import Source
    from taskwarden.state.protocol import StateStore

log = structlog.get_logger(__name__)
_cycle_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PollSettings:
    overlap: timedelta = timedelta(minutes=5)
    """Re-read this much before the checkpoint: clock skew and late indexing."""
    initial_lookback: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=7)
    """Terminal tasks older than this (by receivedTime) leave the state."""


@dataclass(frozen=True, slots=True)
class CycleReport:
    source: str
    cycle_id: int
    events: tuple[Event, ...]
    baseline: bool
    strategy: str
    api_calls: int
    rejected: int
    checkpoint: datetime
    duration: float
    committed: bool
    alerts_fired: int = 0
    alerts_resolved: int = 0
    notifications: tuple[Notification, ...] = ()
    """Outbox entries this cycle made (what a dry run would send)."""

    @property
    def changes(self) -> int:
        return sum(1 for e in self.events if is_change(e))


async def poll_once(
    source: Source,
    store: StateStore,
    settings: PollSettings,
    now: datetime,
    *,
    dry_run: bool = False,
    alerting: Alerting | None = None,
) -> CycleReport:
    """Run one cycle; raises `SourceError` (nothing committed) if the scan fails."""
    alerting = alerting or Alerting()
    cycle_id = next(_cycle_ids)
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(source=source.name, cycle=cycle_id):
        calls_before = source.transport.total_calls  # scan, refreshes and detail enrichment
        view = store.source_view(source.name)
        baseline = store.needs_baseline(source.name)
        observation = await source.observe(
            view, now, overlap=settings.overlap, lookback=settings.initial_lookback
        )
        ids = itertools.chain((t.task_id for t in observation.tasks), observation.gone)
        previous = store.tracked(source.name, ids)
        events = diff(previous, observation.tasks, now, gone=observation.gone)
        prune_before = min(now - settings.retention, observation.checkpoint - 2 * settings.overlap)
        details = await _fetch_details(
            source, wants_details(alerting.teams, events, baseline), alerting.max_details
        )
        window = alerting.burst_window
        active = store.active_alerts(source.name)
        output = evaluate(
            alerting.teams,
            RuleInput(
                source=source.name,
                events=events,
                now=now,
                baseline=baseline,
                source_labels=alerting.source_labels.get(source.name, ()),
                active=active,
                recent_failures=store.recent_failures(source.name, now - window) if window else (),
                details=details,
            ),
        )
        output += source_health(
            source.name,
            None,
            failing_since=None,
            now=now,
            active=active,
            settings=alerting.health,
        )
        notifications = store.commit_cycle(
            source.name,
            CycleCommit(
                checkpoint=observation.checkpoint,
                events=events,
                now=now,
                baseline=baseline,
                strategy=observation.strategy,
                api_calls=source.transport.total_calls - calls_before,
                prune_before=prune_before,
                alerts=alerting.route_output(output),
            ),
            dry_run=dry_run,
        )
        report = CycleReport(
            source=source.name,
            cycle_id=cycle_id,
            events=tuple(events),
            baseline=baseline,
            strategy=observation.strategy,
            api_calls=source.transport.total_calls - calls_before,
            rejected=observation.rejected,
            checkpoint=observation.checkpoint,
            duration=time.perf_counter() - started,
            committed=not dry_run,
            alerts_fired=len(output.fired),
            alerts_resolved=len(output.resolved),
            notifications=tuple(notifications),
        )
        log.info(
            "poll.completed",
            appeared=sum(isinstance(e, TaskAppeared) for e in events),
            changed=sum(isinstance(e, StatusChanged) for e in events),
            gone=sum(isinstance(e, TaskGone) for e in events),
            open=len(events) - report.changes,
            baseline=baseline,
            strategy=report.strategy,
            api_calls=report.api_calls,
            rejected=report.rejected,
            alerts_fired=report.alerts_fired,
            alerts_resolved=report.alerts_resolved,
            notifications=len(notifications),
            seconds=round(report.duration, 3),
            dry_run=dry_run,
        )
        return report


async def _fetch_details(
    source: Source, tasks: Sequence[Task], limit: int
) -> dict[str, TaskDetails | str]:
    """Error details of failed tasks; a failed call still lets the alert go out, saying so."""
    found: dict[str, TaskDetails | str] = {}
    gate = asyncio.Semaphore(4)

    async def one(task: Task) -> None:
        async with gate:
            try:
                found[task.task_id] = await source.details(task.task_id)
            except SourceError as exc:
                log.warning("details.unavailable", task_id=task.task_id, error=str(exc))
                found[task.task_id] = f"the vendor API call failed ({exc})"

    await asyncio.gather(*(one(t) for t in tasks[:limit]))
    for task in tasks[limit:]:
        found[task.task_id] = f"not fetched: more than {limit} failures in one poll"
    return found


async def poll_or_report(
    source: Source,
    store: StateStore,
    settings: PollSettings,
    now: datetime,
    *,
    alerting: Alerting,
    dry_run: bool = False,
) -> CycleReport | SourceError:
    """`poll_once`, turning a failed poll into the source-health alerts it warrants."""
    try:
        return await poll_once(source, store, settings, now, dry_run=dry_run, alerting=alerting)
    except SourceError as exc:
        log.error(  # noqa: TRY400 - an expected outage: the message is the diagnosis
            "poll.failed", source=source.name, error=str(exc), kind=type(exc).__name__
        )
        if dry_run:
            return exc
        since = store.record_poll_failure(source.name, now, str(exc))
        output = source_health(
            source.name,
            exc,
            failing_since=since,
            now=now,
            active=store.active_alerts(source.name),
            settings=alerting.health,
        )
        if output.fired:
            store.apply_alerts(alerting.route_output(output), now)
        return exc
