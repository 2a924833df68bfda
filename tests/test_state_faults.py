"""The state file under faults (issue 11, items 7, 8, 11, 13, 15): a busy file, random byte
corruption, permissions, a lock that cannot be bypassed, a WAL that gives its space back."""

from __future__ import annotations

import random
import shutil
import sqlite3
import stat
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from taskwarden.alerting import Alerting
from taskwarden.cli import cli
from taskwarden.diff import diff
from taskwarden.errors import StateBusyError, StateCorruptError, StateError, StateLockedError
from taskwarden.model import Phase, Task
from taskwarden.poller import CycleReport, PollSettings, poll_or_report
from taskwarden.rules import FailedRule, StuckRule, Team
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.state import CycleCommit, open_state

from .alerting_harness import tree
from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.sources.digitalriver import DigitalRiverClient


def hold_exclusively(path: Path) -> sqlite3.Connection:
    """Another program holding the file (``sqlite3 state.db`` with an exclusive lock)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
    return conn


def test_a_busy_file_is_waited_for_then_refused_never_moved(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_state(path, now=T0).close()
    holder = hold_exclusively(path)
    try:
        with pytest.raises(StateBusyError, match="busy"):
            open_state(path, now=T0, busy_timeout=0.5)
        with pytest.raises(StateBusyError):
            open_state(path, now=T0, read_only=True, busy_timeout=0.5).summary()
    finally:
        holder.close()
    assert list(tmp_path.glob("state.db.corrupt-*")) == []
    open_state(path, now=T0).close()  # released: perfectly usable


def test_read_only_commands_create_and_move_nothing(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(f"state: {{path: {tmp_path / 'state.db'}}}\nsources: {{dr: {{}}}}\n")
    result = CliRunner().invoke(cli, ["state", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert "does not exist yet" in result.output
    result = CliRunner().invoke(cli, ["silence", "list", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taskwarden.yaml"]
    open_state(tmp_path / "state.db", now=T0).close()  # a writer cleanly closed: no -wal left
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(cli, ["state", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_state_command_on_a_busy_file_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(f"state: {{path: {tmp_path / 'state.db'}}}\nsources: {{dr: {{}}}}\n")
    open_state(tmp_path / "state.db", now=T0).close()
    holder = hold_exclusively(tmp_path / "state.db")
    try:
        # The CLI's wait, shortened for the test.
        monkeypatch.setattr("taskwarden.state.sqlite.BUSY_TIMEOUT", 0.3)
        result = CliRunner().invoke(cli, ["state", "-c", str(config)])
    finally:
        holder.close()
    assert result.exit_code == 2
    assert "busy" in result.output
    assert list(tmp_path.glob("state.db.corrupt-*")) == []


def test_the_state_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    open_state(path, now=T0).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # a file from before: tightened on open
    store = open_state(path, now=T0)
    for part in tmp_path.glob("state.db*"):
        if part.suffix != ".lock":
            assert stat.S_IMODE(part.stat().st_mode) == 0o600, part
    store.close()


def test_the_lock_cannot_be_bypassed(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path, now=T0)
    try:
        link = tmp_path / "other-name.db"
        link.symlink_to(path)
        with pytest.raises(StateLockedError):
            open_state(link, now=T0)
        (tmp_path / "state.db.lock").unlink()  # deleting the lock file does not help either
        with pytest.raises(StateLockedError):
            open_state(path, now=T0)
        with pytest.raises(StateLockedError):
            open_state(link, now=T0)
    finally:
        store.close()
    open_state(link, now=T0).close()


def test_a_large_commit_gives_the_wal_back(tmp_path: Path) -> None:
    store = open_state(tmp_path / "state.db", now=T0)
    tasks = [
        Task("dr", f"t{i:06d}", "COMPLETED", Phase.SUCCEEDED, "UPDATE_PRODUCT", T0)
        for i in range(20_000)
    ]
    store.commit_cycle(
        "dr", CycleCommit(checkpoint=T0, events=diff({}, tasks, T0), now=T0, baseline=True)
    )
    wal = tmp_path / "state.db-wal"
    assert wal.stat().st_size < 1 << 20  # about 10 MB were written through it
    store.close()


# --- random byte corruption ----------------------------------------------------------------

TEAM = Team(
    "catalog",
    (FailedRule("failures", "catalog"), StuckRule("stuck", "catalog", after=timedelta(hours=1))),
)


async def build_state(path: Path, sim: Simulator, client: DigitalRiverClient) -> None:
    """A realistic file: tasks in every status, alerts, groups, outbox entries, journal."""
    sim.generate(
        400, begin=sim.now() - timedelta(hours=20), end=sim.now(), open_share=0.2,
        failed_share=0.2,
    )  # fmt: skip
    store = open_state(path, now=sim.now())
    source = DigitalRiverSource(client)
    alerting = Alerting(teams=(TEAM,), route=tree(receiver="slack"))
    try:
        for _ in range(3):
            for task in list(sim.tasks.by_id.values())[:40]:
                if task.status in ("PUBLISHED", "PROCESSING"):
                    sim.set_status(task.task_id, "FAILED")
            sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
            sim.advance_clock(timedelta(hours=1))
            assert isinstance(
                await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting),
                CycleReport,
            )
    finally:
        store.close()


def corrupt(original: Path, copy: Path, seed: int) -> None:
    shutil.copy(original, copy)
    data = bytearray(copy.read_bytes())
    rng = random.Random(seed)
    for _ in range(rng.randint(1, 12)):
        offset = rng.randrange(len(data))
        data[offset] = rng.randrange(256)
    copy.write_bytes(bytes(data))


async def use(path: Path, sim: Simulator, client: DigitalRiverClient) -> str:
    """Start, read everything a cycle reads, poll once: how it went."""
    store = open_state(path, now=sim.now())
    try:
        recovered = store.get_meta("recovered_from") is not None
        for source in ("dr",):
            view = store.source_view(source)
            store.tracked(source, [t.task_id for t in view.open_tasks])
            store.active_alerts(source)
        store.due_notifications(sim.now())
        store.silences()
        store.summary()
        alerting = Alerting(teams=(TEAM,), route=tree(receiver="slack"))
        result = await poll_or_report(
            DigitalRiverSource(client), store, PollSettings(), sim.now, alerting=alerting
        )
        assert isinstance(result, CycleReport), result
    except StateCorruptError as exc:
        store.quarantine(sim.now(), str(exc))  # what the daemon does, then it restarts
        return "moved aside while running"
    finally:
        store.close()
    return "moved aside at open" if recovered else "usable"


async def test_random_byte_corruption_never_crash_loops(
    tmp_path: Path, sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    """15 files with random bytes overwritten: each one is either usable, or found damaged
    (by integrity_check at open or by a row that cannot be decoded) and moved aside; the
    start after that works. No file makes every start fail."""
    original = tmp_path / "original.db"
    await build_state(original, sim, dr_client)
    outcomes: dict[str, int] = {}
    for seed in range(15):
        case = tmp_path / f"case{seed}"
        case.mkdir()
        corrupt(original, case / "state.db", seed)
        first = await use(case / "state.db", sim, dr_client)
        if first == "moved aside while running":
            second = await use(case / "state.db", sim, dr_client)
            assert second in ("usable", "moved aside at open"), (seed, second)
        outcomes[first] = outcomes.get(first, 0) + 1
    assert sum(outcomes.values()) == 15
    assert outcomes.get("moved aside at open", 0) + outcomes.get("moved aside while running", 0)


def test_a_row_that_cannot_be_decoded_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = open_state(path, now=T0)
    tasks = [Task("dr", "a", "PROCESSING", Phase.OPEN, "DEPLOY_PRODUCT", T0)]
    store.commit_cycle(
        "dr", CycleCommit(checkpoint=T0, events=diff({}, tasks, T0), now=T0, baseline=True)
    )
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET products = '{not json' WHERE task_id = 'a'")
    store = open_state(path, now=T0)  # structurally sound: integrity_check passes
    try:
        with pytest.raises(StateCorruptError, match="cannot be decoded"):
            store.tracked("dr", ["a"])
        with pytest.raises(StateError):
            store.summary()
    finally:
        store.close()
