"""The SQLite state store: schema versions, the lock, corruption, atomic commits."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import structlog

from taskwarden.diff import TaskAppeared, diff
from taskwarden.errors import SchemaTooNewError, StateLockedError
from taskwarden.model import Phase, Product, Task
from taskwarden.state import CycleCommit, open_state
from taskwarden.state.schema import MIGRATIONS, SCHEMA_VERSION

from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path


def _task(task_id: str, status: str = "PROCESSING") -> Task:
    return Task(
        source="dr",
        task_id=task_id,
        status=status,
        phase=Phase.OPEN if status == "PROCESSING" else Phase.FAILED,
        kind="DEPLOY_PRODUCT",
        received_time=T0,
        products=(Product("5147", "sku-1", "BASE"),),
        attributes=(("x_request_id", "abc"),),
    )


def test_round_trip_of_a_cycle(tmp_path: Path) -> None:
    store = open_state(tmp_path / "state.db", now=T0)
    assert store.needs_baseline("dr")
    events = diff({}, [_task("a"), _task("b", "FAILED")], T0)
    store.commit_cycle("dr", CycleCommit(checkpoint=T0, events=events, now=T0, baseline=True))
    assert not store.needs_baseline("dr")
    assert store.tracked("dr", ["a", "b", "zzz"]) == {"a": _task("a"), "b": _task("b", "FAILED")}
    view = store.source_view("dr")
    assert view.checkpoint == T0
    assert [t.task_id for t in view.open_tasks] == ["a"]
    journal = store.journal("dr")
    assert [(r["task_id"], r["old_status"], r["new_status"], r["baseline"]) for r in journal] == [
        ("a", None, "PROCESSING", 1),
        ("b", None, "FAILED", 1),
    ]
    store.close()


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    store = open_state(tmp_path / "state.db", now=T0)

    class ExplodedError(Exception):
        pass

    class ExplodingEvents(list[TaskAppeared]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield TaskAppeared(_task("a"))
            raise ExplodedError

    with pytest.raises(ExplodedError):
        store.commit_cycle(
            "dr", CycleCommit(checkpoint=T0, events=ExplodingEvents(), now=T0, baseline=False)
        )
    assert store.tracked("dr", ["a"]) == {}
    assert store.source_view("dr").checkpoint is None
    store.close()


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path, now=T0)
    code = (
        "import sys; from datetime import datetime, UTC\n"
        "from taskwarden.state import open_state\n"
        f"open_state({str(path)!r}, now=datetime.now(UTC))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "StateLockedError" in result.stderr
    assert str(path) in result.stderr
    assert f"PID {os.getpid()}" in result.stderr
    store.close()
    # Released: a new holder gets it.
    open_state(path, now=T0).close()


def test_the_lock_also_holds_within_one_process(tmp_path: Path) -> None:
    store = open_state(tmp_path / "state.db", now=T0)
    with pytest.raises(StateLockedError, match="in use by another taskwarden"):
        open_state(tmp_path / "state.db", now=T0)
    store.close()


def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_state(path, now=T0).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    with pytest.raises(SchemaTooNewError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        open_state(path, now=T0)
    assert path.exists()
    assert list(tmp_path.glob("*.corrupt-*")) == []


@pytest.mark.parametrize(
    "content",
    [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
)
def test_a_corrupt_file_is_moved_aside_loudly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with structlog.testing.capture_logs() as logs:
        store = open_state(path, now=T0)
    moved = list(tmp_path.glob("state.db.corrupt-*"))
    assert len(moved) == 1
    assert moved[0].read_bytes() == content
    event = next(e for e in logs if e["event"] == "state.corrupt_moved_aside")
    assert event["log_level"] == "critical"
    # After recovery the first poll reports, it does not baseline: failures may have been missed.
    assert not store.needs_baseline("dr")
    store.close()


def test_a_foreign_sqlite_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    open_state(path, now=T0).close()
    assert len(list(tmp_path.glob("state.db.corrupt-*"))) == 1


def test_a_version_1_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[1].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO sources (source, checkpoint_ms) VALUES ('dr', 1767225600000)")
    conn.close()
    store = open_state(path, now=T0)
    try:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION) == "5"
        assert store.source_view("dr").checkpoint is not None
        assert store.outbox_depth() == (0, None)
        assert store.silences() == []
        assert store.task_counts() == {}  # reads the v3 status index (INDEXED BY fails without)
        assert store.due_notifications(T0) == []  # reads the v4 FIFO index
    finally:
        store.close()
