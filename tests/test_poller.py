"""Poll cycles through realistic histories, against the simulator with a shared clock."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared, TaskGone
from taskwarden.errors import ServerError
from taskwarden.poller import PollSettings, poll_once
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.state import SqliteStateStore, open_state

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.poller import CycleReport
    from taskwarden.simulator import Simulator
    from taskwarden.sources.digitalriver import DigitalRiverClient

SETTINGS = PollSettings(
    overlap=timedelta(minutes=5), initial_lookback=timedelta(hours=24), retention=timedelta(days=7)
)


@pytest.fixture
def source(dr_client: DigitalRiverClient) -> DigitalRiverSource:
    return DigitalRiverSource(dr_client)


async def cycle(
    sim: Simulator,
    source: DigitalRiverSource,
    store: SqliteStateStore,
    *,
    advance: timedelta = timedelta(minutes=1),
) -> CycleReport:
    sim.advance_clock(advance)
    return await poll_once(source, store, SETTINGS, sim.now())


def changes(report: CycleReport) -> list[tuple[str, str | None, str]]:
    out: list[tuple[str, str | None, str]] = []
    for event in report.events:
        if isinstance(event, TaskAppeared):
            out.append((event.task.task_id, None, event.task.status))
        elif isinstance(event, StatusChanged):
            out.append((event.task.task_id, event.old, event.new))
        elif isinstance(event, TaskGone):
            out.append((event.task.task_id, event.task.status, "GONE"))
    return sorted(out)


async def test_first_start_is_a_silent_baseline_of_the_lookback(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    old = sim.add_task(status="FAILED", received=sim.now() - timedelta(days=3))
    recent = sim.add_task(status="FAILED", received=sim.now() - timedelta(hours=3))
    running = sim.add_task(status="PROCESSING", received=sim.now() - timedelta(hours=1))
    report = await cycle(sim, source, store)
    assert report.baseline
    assert changes(report) == sorted(
        [(recent.task_id, None, "FAILED"), (running.task_id, None, "PROCESSING")]
    )
    assert old.task_id not in store.tracked("dr", [old.task_id])
    assert all(row["baseline"] == 1 for row in store.journal("dr"))
    second = await cycle(sim, source, store)
    assert not second.baseline


async def test_a_status_change_hours_after_receipt_is_reported(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    task = sim.add_task(status="PUBLISHED", request_type="DEPLOY_PRODUCT")
    await cycle(sim, source, store)
    sim.advance_clock(timedelta(hours=1))
    sim.set_status(task.task_id, "PROCESSING")
    for _ in range(5):  # hours pass; the task is far behind the checkpoint now
        report = await cycle(sim, source, store, advance=timedelta(minutes=30))
    sim.set_status(task.task_id, "FAILED")
    report = await cycle(sim, source, store)
    assert changes(report) == [(task.task_id, "PROCESSING", "FAILED")]
    assert report.strategy == "detail"
    assert [(r["old_status"], r["new_status"]) for r in store.journal("dr")] == [
        (None, "PUBLISHED"),
        ("PUBLISHED", "PROCESSING"),
        ("PROCESSING", "FAILED"),
    ]


async def test_a_task_open_for_days_is_still_tracked(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    task = sim.add_task(status="PROCESSING")
    await cycle(sim, source, store)
    for _ in range(10):
        report = await cycle(sim, source, store, advance=timedelta(hours=12))
    still = [e for e in report.events if isinstance(e, StillOpen)]
    assert [e.task.task_id for e in still] == [task.task_id]
    assert still[0].age == timedelta(days=5, minutes=1)
    sim.set_status(task.task_id, "COMPLETED")
    report = await cycle(sim, source, store)
    assert changes(report) == [(task.task_id, "PROCESSING", "COMPLETED")]


async def test_many_open_tasks_are_refreshed_by_relisting(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    opened = [
        sim.add_task(status="PROCESSING", received=sim.now() - timedelta(minutes=m))
        for m in range(1, 121)
    ]
    await cycle(sim, source, store)
    await cycle(sim, source, store, advance=timedelta(hours=3))
    for task in opened[:7]:
        sim.set_status(task.task_id, "FAILED")
    before = sim.requests.copy()
    report = await cycle(sim, source, store)
    assert report.strategy == "relist"
    # 1 new-task listing + 3 pages of 113 open tasks + 7 GETs for the tasks that left the set.
    assert sim.requests["dr.list"] - before["dr.list"] == 4
    assert sim.requests["dr.detail"] - before["dr.detail"] == 7
    assert report.api_calls == 11
    assert changes(report) == sorted((t.task_id, "PROCESSING", "FAILED") for t in opened[:7])


async def test_an_idle_cycle_costs_a_small_constant(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    sim.generate(
        2_000, begin=sim.now() - timedelta(hours=23), end=sim.now() - timedelta(minutes=10)
    )
    sim.add_task(status="PROCESSING", received=sim.now() - timedelta(hours=2))
    first = await cycle(sim, source, store)
    assert first.api_calls == 41  # the baseline reads the lookback once
    idle = await cycle(sim, source, store)
    assert idle.api_calls == 2  # new-task listing + one GET for the open task
    assert idle.changes == 0


async def test_an_api_outage_loses_nothing(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    task = sim.add_task(status="PROCESSING")
    await cycle(sim, source, store)
    checkpoint = store.source_view("dr").checkpoint
    sim.inject(Fault("server_error", remaining=1000))
    newcomer = None
    for step in range(4):
        with pytest.raises(ServerError):
            await cycle(sim, source, store, advance=timedelta(minutes=10))
        if step == 1:
            sim.set_status(task.task_id, "FAILED")
            newcomer = sim.add_task(status="FAILED", request_type="RETIRE_PRODUCT")
        assert store.source_view("dr").checkpoint == checkpoint
    sim.faults.clear()
    report = await cycle(sim, source, store)
    assert newcomer is not None
    assert changes(report) == sorted(
        [(task.task_id, "PROCESSING", "FAILED"), (newcomer.task_id, None, "FAILED")]
    )


async def test_a_31_day_downtime_catches_up_in_slices(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    await cycle(sim, source, store)
    start = sim.now()
    during = [
        sim.add_task(status="FAILED", received=start + timedelta(days=d, hours=1))
        for d in (1, 15, 29, 30, 31)
    ]
    sim.advance_clock(timedelta(days=31, hours=2))
    before = sim.requests["dr.list"]
    report = await poll_once(source, store, SETTINGS, sim.now())
    assert changes(report) == sorted((t.task_id, None, "FAILED") for t in during)
    assert sim.requests["dr.list"] - before == 2
    assert store.source_view("dr").checkpoint == sim.now()


async def test_a_restart_after_a_clean_stop_repeats_nothing(
    tmp_path: Path, sim: Simulator, source: DigitalRiverSource
) -> None:
    path = tmp_path / "restart.db"
    store = open_state(path, now=sim.now())
    sim.add_task(status="FAILED")
    running = sim.add_task(status="PROCESSING")
    await cycle(sim, source, store)
    store.close()
    store = open_state(path, now=sim.now())
    report = await cycle(sim, source, store, advance=timedelta(minutes=2))
    assert report.changes == 0
    assert [e.task.task_id for e in report.events if isinstance(e, StillOpen)] == [running.task_id]
    store.close()


async def test_terminal_tasks_leave_the_state_after_retention(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    done = sim.add_task(status="PUBLISHED")
    stuck = sim.add_task(status="PROCESSING")
    await cycle(sim, source, store)
    sim.set_status(done.task_id, "COMPLETED")
    await cycle(sim, source, store)
    for _ in range(8):
        await cycle(sim, source, store, advance=timedelta(days=1))
    assert set(store.tracked("dr", [done.task_id, stuck.task_id])) == {stuck.task_id}


async def test_a_vanished_task_is_gone(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    task = sim.add_task(status="PROCESSING")
    await cycle(sim, source, store)
    await cycle(sim, source, store, advance=timedelta(hours=1))
    del sim.tasks.by_id[task.task_id]
    report = await cycle(sim, source, store)
    assert changes(report) == [(task.task_id, "PROCESSING", "GONE")]
    assert store.source_view("dr").open_tasks == ()


async def test_dry_run_changes_nothing(
    sim: Simulator, source: DigitalRiverSource, store: SqliteStateStore
) -> None:
    sim.add_task(status="FAILED")
    sim.advance_clock(timedelta(minutes=1))
    report = await poll_once(source, store, SETTINGS, sim.now(), dry_run=True)
    assert report.changes == 1
    assert not report.committed
    assert store.source_view("dr").checkpoint is None
