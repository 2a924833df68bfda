"""The contract between the poll cycle and a vendor adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from taskwarden.model import Observation, SourceView, TaskDetails


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
