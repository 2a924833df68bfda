"""The diff engine: what changed between the remembered state and one poll's observations.

Pure: no I/O and no clock. ``now`` is an argument, so the same inputs always give the
same events, and tests and property checks can drive time freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

    from taskwarden.model import Phase, Task


@dataclass(frozen=True, slots=True)
class TaskAppeared:
    """A task we had never seen, in whatever status it already has."""

    task: Task


@dataclass(frozen=True, slots=True)
class StatusChanged:
    task: Task
    old: str
    new: str
    old_phase: Phase


@dataclass(frozen=True, slots=True)
class TaskUpdated:
    """Same status, other fields changed (``finishedTime`` filled in, products listed)."""

    task: Task


@dataclass(frozen=True, slots=True)
class StillOpen:
    """An open task, observed again; the stuck rule reads its age."""

    task: Task
    age: timedelta


@dataclass(frozen=True, slots=True)
class TaskGone:
    """A tracked task the vendor no longer knows about."""

    task: Task


Event = TaskAppeared | StatusChanged | TaskUpdated | StillOpen | TaskGone


def _progress(task: Task) -> tuple[int, float, str]:
    """A total order on snapshots of one task: the later one in its life sorts higher.

    Pages of one poll can overlap (slice boundaries, the checkpoint overlap) and a task may
    move between two requests: terminal beats running beats queued (`Phase.progress`), a
    later finish beats an earlier one. The repr breaks any remaining tie, so the merge does
    not depend on the order pages arrived in.
    """
    finished = task.finished_time.timestamp() if task.finished_time else float("-inf")
    return (task.phase.progress, finished, repr(task))


def merge_observations(observed: Iterable[Task]) -> dict[str, Task]:
    """One snapshot per task, independent of the order pages arrived in."""
    merged: dict[str, Task] = {}
    for task in observed:
        known = merged.get(task.task_id)
        if known is None or _progress(task) > _progress(known):
            merged[task.task_id] = task
    return merged


def diff(
    previous: Mapping[str, Task],
    observed: Iterable[Task],
    now: datetime,
    *,
    gone: Iterable[str] = (),
) -> list[Event]:
    """Events that turn ``previous`` into the observed world.

    ``previous`` needs to hold only the tasks that were observed or gone: tasks not
    mentioned keep their state.
    """
    events: list[Event] = []
    for task_id, task in sorted(merge_observations(observed).items()):
        known = previous.get(task_id)
        if known is None:
            events.append(TaskAppeared(task))
        elif known.status != task.status:
            events.append(
                StatusChanged(task, old=known.status, new=task.status, old_phase=known.phase)
            )
        elif known != task:
            events.append(TaskUpdated(task))
        if not task.phase.is_terminal:
            events.append(StillOpen(task, age=max(now - task.received_time, timedelta(0))))
    for task_id in sorted(set(gone)):
        known = previous.get(task_id)
        if known is not None:
            events.append(TaskGone(known))
    return events


def apply(previous: Mapping[str, Task], events: Iterable[Event]) -> dict[str, Task]:
    """The state after ``events``: what `diff` promises, as a function (the property tests
    check ``apply(previous, diff(previous, observed)) == previous | observed - gone``)."""
    state = dict(previous)
    for event in events:
        if isinstance(event, TaskGone):
            state.pop(event.task.task_id, None)
        else:
            state[event.task.task_id] = event.task
    return state


def is_change(event: Event) -> bool:
    return not isinstance(event, StillOpen)
