"""The `StateStore` protocol and the records that cross it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from taskwarden.diff import Event
    from taskwarden.model import Task
    from taskwarden.sources.base import SourceView


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
    extras: dict[str, int] = field(default_factory=dict)


class StateStore(Protocol):
    """Where taskwarden remembers what it has seen. One process at a time."""

    def source_view(self, source: str) -> SourceView: ...

    def tracked(self, source: str, task_ids: Iterable[str]) -> dict[str, Task]: ...

    def needs_baseline(self, source: str) -> bool:
        """True until the first poll of a fresh state file is committed."""
        ...

    def commit_cycle(self, source: str, commit: CycleCommit) -> None: ...

    def summary(self) -> StateSummary: ...

    def close(self) -> None: ...
