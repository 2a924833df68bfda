"""Persistent state: checkpoints, tracked tasks, the transition journal, alerts, groups and
the outbox, committed together so that a crash can never separate a change from its record.

The ports are in `taskwarden.state.protocol` (and the outbox's in `taskwarden.delivery`);
SQLite (`taskwarden.state.sqlite`) is the embedded backend."""

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
