"""One poll cycle of one source: view → observe → diff → a single commit.

Nothing is written unless the whole scan succeeded: a failed page raises before the
commit, and the next cycle repeats the same scope from the unchanged checkpoint.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

from taskwarden.diff import StatusChanged, TaskAppeared, TaskGone, diff, is_change
from taskwarden.state.protocol import CycleCommit

if TYPE_CHECKING:
    from datetime import datetime

    from taskwarden.diff import Event
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
) -> CycleReport:
    """Run one cycle; raises `SourceError` (nothing committed) if the scan fails."""
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
        if not dry_run:
            store.commit_cycle(
                source.name,
                CycleCommit(
                    checkpoint=observation.checkpoint,
                    events=events,
                    now=now,
                    baseline=baseline,
                    strategy=observation.strategy,
                    api_calls=observation.api_calls,
                    prune_before=prune_before,
                ),
            )
        report = CycleReport(
            source=source.name,
            cycle_id=cycle_id,
            events=tuple(events),
            baseline=baseline,
            strategy=observation.strategy,
            api_calls=observation.api_calls,
            rejected=observation.rejected,
            checkpoint=observation.checkpoint,
            duration=time.perf_counter() - started,
            committed=not dry_run,
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
            seconds=round(report.duration, 3),
            dry_run=dry_run,
        )
        return report
