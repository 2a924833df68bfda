"""Persistent state: checkpoints, tracked tasks, the transition journal (and, later, the
outbox), committed together so that a crash can never separate a change from its record."""

from taskwarden.state.protocol import CycleCommit, SourceStatus, StateStore, StateSummary
from taskwarden.state.sqlite import SqliteStateStore, open_state

__all__ = [
    "CycleCommit",
    "SourceStatus",
    "SqliteStateStore",
    "StateStore",
    "StateSummary",
    "open_state",
]
