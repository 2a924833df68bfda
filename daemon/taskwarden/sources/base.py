"""The contract between the poll cycle and a vendor adapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from taskwarden.model import Observation, TaskDetails


@dataclass(frozen=True, slots=True)
class OpenTask:
    """A task that was open at the last poll, as the state store remembers it."""

    task_id: str
    received_time: datetime


@dataclass(frozen=True, slots=True)
class SourceView:
    """The part of the persisted state a source needs to plan one poll."""

    checkpoint: datetime | None
    open_tasks: tuple[OpenTask, ...]


class Source(Protocol):
    """A vendor feed of asynchronous tasks."""

    @property
    def name(self) -> str: ...

    async def check(self) -> str:
        """One cheap authenticated call (``check --connect``); a line for humans."""
        ...

    async def observe(
        self, view: SourceView, now: datetime, *, overlap: timedelta, lookback: timedelta
    ) -> Observation:
        """Scan what was received since the checkpoint and learn the fate of open tasks.

        Raises `taskwarden.errors.SourceError` when the scan could not be completed; a
        partial scan is never returned.
        """
        ...

    async def details(self, task_id: str) -> TaskDetails:
        """The task with the problems the vendor attached to it."""
        ...
