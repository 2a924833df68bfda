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
from taskwarden.errors import LeaseLostError, SourceError, StateError
from taskwarden.health import source_health
from taskwarden.rules import RuleInput, evaluate, wants_details
from taskwarden.sources.http import counting_calls
from taskwarden.state.protocol import CycleCommit

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from taskwarden.alerts import Notification
    from taskwarden.diff import Event
    from taskwarden.model import Task, TaskDetails
    from taskwarden.sources.base import Source
    from taskwarden.state.protocol import Lease, PollStore

log = structlog.get_logger(__name__)
_cycle_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class PollSettings:
    overlap: timedelta = timedelta(minutes=5)
    """Re-read this much before the checkpoint: clock skew and late indexing."""
    initial_lookback: timedelta = timedelta(hours=24)
    retention: timedelta = timedelta(days=7)
    """Terminal tasks older than this (by receivedTime) leave the state."""
    deadline: timedelta = timedelta(minutes=1)
    """A cycle still running after this is abandoned (nothing committed) and counts as a
    failed poll: no server, however slow, holds a source's polling."""


@dataclass(frozen=True, slots=True)
class CycleReport:
    source: str
    cycle_id: int
    events: tuple[Event, ...]
    baseline: bool
    strategy: str
    api_calls: int
    rejected: Mapping[str, int]
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


@dataclass(frozen=True, slots=True)
class PollFailed:
    """A cycle that did not complete, whatever the reason; nothing of it was committed."""

    source: str
    error: Exception
    message: str
    """What went wrong, for logs, ``/readyz`` and the source-health alert."""
    started: datetime
    failed_at: datetime
    api_calls: int = 0


async def poll_once(
    source: Source,
    store: PollStore,
    settings: PollSettings,
    now: datetime,
    *,
    dry_run: bool = False,
    alerting: Alerting | None = None,
    lease: Lease | None = None,
) -> CycleReport:
    """Run one cycle; raises (nothing committed) if the scan or the commit fails, or if
    ``lease`` moved on to another replica meanwhile (`LeaseLostError`)."""
    with counting_calls() as calls:
        return await _poll_once(
            source,
            store,
            settings,
            now,
            calls=calls,
            dry_run=dry_run,
            alerting=alerting,
            lease=lease,
        )


async def _poll_once(
    source: Source,
    store: PollStore,
    settings: PollSettings,
    now: datetime,
    *,
    calls: Counter[str],
    dry_run: bool,
    alerting: Alerting | None,
    lease: Lease | None,
) -> CycleReport:
    alerting = alerting or Alerting()
    cycle_id = next(_cycle_ids)
    started = time.perf_counter()
    with structlog.contextvars.bound_contextvars(source=source.name, cycle=cycle_id):
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
                console_link=alerting.console_links.get(source.name),
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
                api_calls=calls.total(),
                prune_before=prune_before,
                alerts=alerting.route_output(output),
                lease=lease,
            ),
            dry_run=dry_run,
        )
        report = CycleReport(
            source=source.name,
            cycle_id=cycle_id,
            events=tuple(events),
            baseline=baseline,
            strategy=observation.strategy,
            api_calls=calls.total(),
            rejected=dict(observation.rejected),
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
            rejected=sum(report.rejected.values()),
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


def describe_failure(exc: BaseException, deadline: timedelta) -> str:
    """One line that says what stopped a cycle, for people."""
    if isinstance(exc, SourceError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"the cycle did not finish within its deadline of {deadline.total_seconds():g}s"
    return f"internal error: {type(exc).__name__}: {exc}"


async def poll_or_report(
    source: Source,
    store: PollStore,
    settings: PollSettings,
    clock: Callable[[], datetime],
    *,
    alerting: Alerting,
    dry_run: bool = False,
    lease: Lease | None = None,
) -> CycleReport | PollFailed:
    """`poll_once` within its deadline; any failure becomes a recorded failed poll and the
    source-health alerts it warrants.

    Whatever the exception (a vendor error, the deadline, a bug), the cycle ends as a
    failure that is logged, recorded in the state (``failing_since``, ``last_error``) and
    counted towards ``health.unreachable_after``. Only the state store failing to record it
    escapes (`StateError`): that is the daemon's own trouble, reported by its caller; and a
    lease lost to another replica (`LeaseLostError`): no failure, the cycle is not ours.
    """
    started = clock()
    with counting_calls() as calls:
        try:
            async with asyncio.timeout(settings.deadline.total_seconds()):
                return await poll_once(
                    source,
                    store,
                    settings,
                    started,
                    dry_run=dry_run,
                    alerting=alerting,
                    lease=lease,
                )
        except (StateError, LeaseLostError):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, whatever it is
            failure = PollFailed(
                source=source.name,
                error=exc,
                message=describe_failure(exc, settings.deadline),
                started=started,
                failed_at=clock(),
                api_calls=calls.total(),
            )
    _log_failure(failure)
    if dry_run:
        return failure
    since = store.record_poll_failure(source.name, failure.started, failure.message)
    output = source_health(
        source.name,
        failure.error,
        message=failure.message,
        failing_since=since,
        now=failure.failed_at,
        active=store.active_alerts(source.name),
        settings=alerting.health,
    )
    if output.fired:
        store.apply_alerts(alerting.route_output(output), failure.failed_at)
    return failure


def _log_failure(failure: PollFailed) -> None:
    exc = failure.error
    fields = {
        "source": failure.source,
        "error": failure.message,
        "kind": type(exc).__name__,
        "api_calls": failure.api_calls,
    }
    if isinstance(exc, (SourceError, TimeoutError)):
        log.error("poll.failed", **fields)  # an expected outage: the message is the diagnosis
    else:
        log.error("poll.failed", exc_info=exc, **fields)  # a bug: keep its traceback
