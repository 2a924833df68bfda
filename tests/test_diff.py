"""Properties of the pure diff engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from taskwarden.diff import (
    StatusChanged,
    StillOpen,
    TaskAppeared,
    TaskGone,
    TaskUpdated,
    apply,
    diff,
    is_change,
    merge_observations,
)
from taskwarden.model import Phase, Task
from taskwarden.sources.digitalriver import phase_of

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
STATUSES = ["PUBLISHED", "PROCESSING", "COMPLETED", "FAILED", "ON_HOLD"]


@st.composite
def tasks(draw: st.DrawFn, task_id: str | None = None) -> Task:
    status = draw(st.sampled_from(STATUSES))
    received = NOW - timedelta(minutes=draw(st.integers(0, 60 * 24 * 40)))
    finished = None
    if phase_of(status).is_terminal:
        finished = received + timedelta(seconds=draw(st.integers(1, 86_400)))
    return Task(
        source="dr",
        task_id=task_id or draw(st.sampled_from([f"t{i}" for i in range(12)])),
        status=status,
        phase=phase_of(status),
        kind=draw(st.sampled_from(["DEPLOY_PRODUCT", "CREATE_PRODUCT"])),
        received_time=received,
        finished_time=finished,
    )


def snapshot(items: list[Task]) -> dict[str, Task]:
    return merge_observations(items)


@given(st.lists(tasks()))
def test_a_snapshot_diffed_against_itself_yields_no_change(items: list[Task]) -> None:
    state = snapshot(items)
    events = diff(state, state.values(), NOW)
    assert [e for e in events if is_change(e)] == []
    still_open = {e.task.task_id for e in events if isinstance(e, StillOpen)}
    assert still_open == {i for i, t in state.items() if not t.phase.is_terminal}


@given(st.lists(tasks()), st.lists(tasks()), st.sets(st.sampled_from([f"t{i}" for i in range(12)])))
def test_applying_the_events_yields_the_new_state(
    old: list[Task], observed: list[Task], gone: set[str]
) -> None:
    previous = snapshot(old)
    observed_ids = {t.task_id for t in observed}
    gone = gone - observed_ids
    events = diff(previous, observed, NOW, gone=gone)
    expected = {**previous, **snapshot(observed)}
    for task_id in gone:
        expected.pop(task_id, None)
    assert apply(previous, events) == expected


@given(st.lists(tasks()), st.lists(st.lists(tasks()), max_size=5), st.randoms())
def test_page_order_does_not_matter(old: list[Task], pages: list[list[Task]], rnd: object) -> None:
    previous = snapshot(old)
    shuffled = list(pages)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    flat = [t for page in pages for t in page]
    flat_shuffled = [t for page in shuffled for t in reversed(page)]
    assert diff(previous, flat, NOW) == diff(previous, flat_shuffled, NOW)


def _task(status: str, **overrides: object) -> Task:
    base = Task(
        source="dr",
        task_id="t1",
        status=status,
        phase=phase_of(status),
        kind="DEPLOY_PRODUCT",
        received_time=NOW - timedelta(hours=2),
    )
    return Task(**{**{f: getattr(base, f) for f in Task.__slots__}, **overrides})  # type: ignore[arg-type]


def test_each_event_kind() -> None:
    processing = _task("PROCESSING")
    assert diff({}, [processing], NOW) == [
        TaskAppeared(processing),
        StillOpen(processing, timedelta(hours=2)),
    ]
    failed = _task("FAILED", finished_time=NOW)
    assert diff({"t1": processing}, [failed], NOW) == [
        StatusChanged(failed, old="PROCESSING", new="FAILED", old_phase=Phase.RUNNING)
    ]
    renamed = _task("FAILED", finished_time=NOW, uri="https://x")
    assert diff({"t1": failed}, [renamed], NOW) == [TaskUpdated(renamed)]
    assert diff({"t1": failed}, [], NOW, gone={"t1"}) == [TaskGone(failed)]
    assert diff({}, [], NOW, gone={"t1"}) == []


def test_the_later_snapshot_of_a_task_wins_within_one_poll() -> None:
    published = _task("PUBLISHED")
    failed = _task("FAILED", finished_time=NOW)
    for order in ([published, failed], [failed, published]):
        assert merge_observations(order)["t1"] == failed
