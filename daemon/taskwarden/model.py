"""Domain objects shared by every source: tasks, their products and their problems.

Vendors name things differently (Digital River *tasks*, Elastic Path *jobs*); each source
adapter maps its payloads onto these types so that diffing, rules and routing never need
to know which vendor a task came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime


class Phase(StrEnum):
    """Where a task is in its life, whatever the vendor calls the status."""

    OPEN = "open"
    """Received, not started yet (Digital River PUBLISHED, Elastic Path pending)."""
    RUNNING = "running"
    """Started, not finished (PROCESSING, started)."""
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"
    """A status we have never heard of: tracked like an open task until it turns terminal."""

    @property
    def is_terminal(self) -> bool:
        return self in {Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED}

    @property
    def progress(self) -> int:
        """How far along its life: later snapshots of a task never go back."""
        return _PROGRESS[self]


_PROGRESS = {
    Phase.OPEN: 0,
    Phase.RUNNING: 1,
    Phase.UNKNOWN: 2,
    Phase.SUCCEEDED: 3,
    Phase.FAILED: 3,
    Phase.CANCELLED: 3,
}


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str | None = None
    external_reference_id: str | None = None
    product_type: str | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One entry of a task's ``errors``, ``deploymentErrors`` or ``deploymentWarnings``."""

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class Task:
    """A snapshot of one vendor task as observed at one moment."""

    source: str
    task_id: str
    status: str
    """The vendor's own status string, kept verbatim (unknown values included)."""
    phase: Phase
    kind: str
    """Digital River ``requestType`` or Elastic Path job type."""
    received_time: datetime
    finished_time: datetime | None = None
    products: tuple[Product, ...] = ()
    uri: str | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    """Vendor extras worth showing in an alert (``x_request_id``, export file locations)."""


@dataclass(frozen=True, slots=True)
class TaskDetails:
    """A task with the problems the vendor attached to it."""

    task: Task
    errors: tuple[Problem, ...] = ()
    deployment_errors: tuple[Problem, ...] = ()
    deployment_warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class OpenTask:
    """A task that was open at the last poll, as the state remembers it."""

    task_id: str
    received_time: datetime


@dataclass(frozen=True, slots=True)
class SourceView:
    """What a source needs of the remembered state to plan one poll."""

    checkpoint: datetime | None
    open_tasks: tuple[OpenTask, ...]


@dataclass(frozen=True, slots=True)
class Observation:
    """What one poll of one source learned: complete for the scope it covered."""

    tasks: tuple[Task, ...]
    checkpoint: datetime
    """Everything received before this moment has been scanned."""
    gone: frozenset[str] = frozenset()
    """Tracked tasks the vendor no longer knows (404 on refresh)."""
    strategy: str = ""
    """How open tasks were refreshed this cycle, for inspection and benchmarks."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Records of the vendor's answers that were unusable and skipped (each logged), by
    reason."""
