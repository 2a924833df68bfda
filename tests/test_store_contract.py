"""The state's contract: one suite per port, run over every backend (as APScheduler 4 runs
one suite over every data store). A new backend joins by adding itself to ``BACKENDS``.

SQLite-only matters (the lock, corruption, migrations, the WAL) are in test_state_store.py
and test_state_faults.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.alerts import Alert, AlertState, Notification, Severity
from taskwarden.diff import TaskGone, diff
from taskwarden.errors import LeaseLostError
from taskwarden.matchers import parse_all
from taskwarden.model import Phase, Task
from taskwarden.routing import AlertBatch, Destination, RoutedAlert, Silence, Timing
from taskwarden.state import CycleCommit, open_state
from taskwarden.state.postgres import open_postgres
from taskwarden.state.protocol import Lease

from .conftest import T0

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from taskwarden.state.protocol import StateStore

Opener = Callable[[], "StateStore"]


def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return lambda: open_state(tmp_path / "contract.db", now=T0)


def postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    url = request.getfixturevalue("pg_url")
    open_postgres(url, apply_migrations=True).close()
    return lambda: open_postgres(url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "sqlite": sqlite_backend,
    "postgresql": postgres_backend,
}


@pytest.fixture(params=sorted(BACKENDS))
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def store(opener: Opener) -> Iterator[StateStore]:
    opened = opener()
    yield opened
    opened.close()


def task(task_id: str, status: str = "PROCESSING", *, received: int = 0) -> Task:
    phase = {"COMPLETED": Phase.SUCCEEDED, "FAILED": Phase.FAILED}.get(status, Phase.RUNNING)
    return Task("dr", task_id, status, phase, "DEPLOY_PRODUCT", T0 + timedelta(minutes=received))


def commit(
    store: StateStore, tasks: list[Task], *, at: timedelta = timedelta(0), **kw: object
) -> list[Notification]:
    now = T0 + at
    previous = store.tracked("dr", [t.task_id for t in tasks])
    events = diff(previous, tasks, now)
    return store.commit_cycle(
        "dr",
        CycleCommit(
            checkpoint=now,
            events=events,
            now=now,
            baseline=kw.pop("baseline", False),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        ),
    )


# --- TaskStore ------------------------------------------------------------------------------


class TestTaskStore:
    def test_a_fresh_state_needs_a_baseline_and_knows_nothing(self, store: StateStore) -> None:
        assert store.needs_baseline("dr")
        view = store.source_view("dr")
        assert view.checkpoint is None
        assert view.open_tasks == ()
        assert store.tracked("dr", ["a"]) == {}

    def test_a_cycle_is_remembered(self, store: StateStore) -> None:
        commit(
            store,
            [task("b", received=2), task("a", received=1), task("c", "FAILED")],
            baseline=True,
        )
        assert not store.needs_baseline("dr")
        view = store.source_view("dr")
        assert view.checkpoint == T0
        assert [t.task_id for t in view.open_tasks] == ["a", "b"]  # oldest first
        assert store.tracked("dr", ["a", "c", "zz"]) == {
            "a": task("a", received=1),
            "c": task("c", "FAILED"),
        }
        assert store.task_counts() == {("dr", "PROCESSING"): 2, ("dr", "FAILED"): 1}

    def test_the_checkpoint_never_moves_back(self, store: StateStore) -> None:
        commit(store, [], at=timedelta(hours=1))
        commit(store, [], at=timedelta(0))
        assert store.source_view("dr").checkpoint == T0 + timedelta(hours=1)

    def test_a_dry_run_changes_nothing(self, store: StateStore) -> None:
        now = T0
        store.commit_cycle(
            "dr",
            CycleCommit(checkpoint=now, events=diff({}, [task("a")], now), now=now, baseline=False),
            dry_run=True,
        )
        assert store.needs_baseline("dr")
        assert store.tracked("dr", ["a"]) == {}

    def test_gone_tasks_leave_and_old_terminal_tasks_are_pruned(self, store: StateStore) -> None:
        commit(store, [task("open"), task("done", "COMPLETED"), task("gone")], baseline=True)
        gone = store.tracked("dr", ["gone"])["gone"]
        now = T0 + timedelta(days=8)
        store.commit_cycle(
            "dr",
            CycleCommit(
                checkpoint=now, events=[TaskGone(gone)], now=now, baseline=False,
                prune_before=T0 + timedelta(days=1),
            ),
        )  # fmt: skip
        assert set(store.tracked("dr", ["open", "done", "gone"])) == {"open"}

    def test_failures_are_remembered_until_a_poll_works(self, store: StateStore) -> None:
        first = store.record_poll_failure("dr", T0, "HTTP 503")
        later = store.record_poll_failure("dr", T0 + timedelta(minutes=5), "HTTP 503")
        assert first == later == T0
        commit(store, [], at=timedelta(minutes=6))
        assert store.record_poll_failure("dr", T0 + timedelta(minutes=7), "x") == T0 + timedelta(
            minutes=7
        )

    def test_recent_failures_are_the_observed_ones(self, store: StateStore) -> None:
        commit(store, [task("old", "FAILED")], baseline=True)
        commit(store, [task("a")], at=timedelta(minutes=1))
        commit(store, [task("a", "FAILED")], at=timedelta(minutes=2))
        recent = store.recent_failures("dr", T0)
        assert [(at, t.task_id) for at, t in recent] == [(T0 + timedelta(minutes=2), "a")]
        assert store.recent_failures("dr", T0 + timedelta(minutes=3)) == []

    def test_the_summary_counts_what_is_tracked(self, store: StateStore) -> None:
        commit(store, [task("a"), task("b", "FAILED")], baseline=True)
        [status] = store.summary().sources
        assert status.source == "dr"
        assert status.tasks_by_status == {"PROCESSING": 1, "FAILED": 1}
        assert [t.task_id for t in status.open_tasks] == ["a"]


# --- AlertStore and Outbox ----------------------------------------------------------------------

NOW = T0


def alert(key: str, *, one_shot: bool = False, state: AlertState = AlertState.FIRING) -> Alert:
    return Alert(
        key=key, rule="stuck", source="dr", severity=Severity.WARNING,
        labels=(("team", "catalog"),), title=f"alert {key}", one_shot=one_shot, state=state,
        starts_at=NOW,
    )  # fmt: skip


def routed(a: Alert, receiver: str = "slack", group: str = "g1") -> AlertBatch:
    destination = Destination(
        receiver, f"{receiver}|{group}", (("team", "catalog"),),
        Timing(group_wait=timedelta(0), group_interval=timedelta(0)),
    )  # fmt: skip
    return AlertBatch(fired=(RoutedAlert(a, (destination,)),))


class TestAlertStore:
    def test_a_stateful_alert_is_active_until_resolved(self, store: StateStore) -> None:
        made = store.apply_alerts(routed(alert("k1")), NOW)
        assert [n.firing[0].key for n in made] == ["k1"]
        assert set(store.active_alerts("dr")) == {"k1"}
        resolved = alert("k1").resolved(NOW, "done")
        made = store.apply_alerts(AlertBatch(resolved=(resolved,)), NOW)
        assert [n.resolved[0].key for n in made] == ["k1"]
        assert made[0].follow_up
        assert store.active_alerts("dr") == {}

    def test_a_one_shot_alert_is_told_once_and_never_active(self, store: StateStore) -> None:
        assert len(store.apply_alerts(routed(alert("f1", one_shot=True)), NOW)) == 1
        assert store.apply_alerts(routed(alert("f1", one_shot=True)), NOW) == []
        assert store.active_alerts("dr") == {}

    def test_a_firing_alert_applied_again_is_refreshed_not_retold(self, store: StateStore) -> None:
        store.apply_alerts(routed(alert("k1")), NOW)
        again = replace(alert("k1"), title="refreshed")
        assert store.apply_alerts(routed(again), NOW) == []
        assert store.active_alerts("dr")["k1"].title == "refreshed"


class TestOutbox:
    def test_entries_wait_in_order_behind_their_receivers_oldest(self, store: StateStore) -> None:
        first = store.enqueue(Notification("slack", "g", (), (alert("a"),)), NOW)
        store.enqueue(Notification("slack", "g", (), (alert("b"),)), NOW)
        store.enqueue(Notification("mail", "g", (), (alert("c"),)), NOW)
        due = store.due_notifications(NOW)
        assert [(i.receiver, i.notification.firing[0].key) for i in due] == [
            ("slack", "a"), ("slack", "b"), ("mail", "c"),
        ]  # fmt: skip
        head = next(i for i in due if i.outbox_id == first)
        store.mark_retry(head, NOW + timedelta(minutes=1), "429")
        assert [i.receiver for i in store.due_notifications(NOW)] == ["mail"]  # slack waits
        assert len(store.due_notifications(NOW + timedelta(minutes=1))) == 3
        assert store.outbox_depth() == (3, NOW)

    def test_a_replica_sees_only_the_receivers_it_delivers(self, store: StateStore) -> None:
        store.enqueue(Notification("slack", "g", (), (alert("a"),)), NOW)
        store.enqueue(Notification("mail", "g", (), (alert("c"),)), NOW)
        assert [i.receiver for i in store.due_notifications(NOW, receivers=["mail"])] == ["mail"]
        assert store.due_notifications(NOW, receivers=[]) == []

    def test_a_sent_entry_leaves_and_its_thread_stays_the_first(self, store: StateStore) -> None:
        made = store.apply_alerts(routed(alert("k1")), NOW)
        assert len(made) == 1
        [item] = store.due_notifications(NOW)
        assert item.thread_key is not None
        store.mark_sent(item, NOW, "ts-1")
        assert store.thread_ref(item.thread_key) == "ts-1"
        store.apply_alerts(AlertBatch(resolved=(alert("k1").resolved(NOW, "done"),)), NOW)
        [follow_up] = store.due_notifications(NOW)
        assert follow_up.thread_key == item.thread_key
        store.mark_sent(follow_up, NOW, "ts-2")
        assert store.thread_ref(item.thread_key) == "ts-1"
        assert store.outbox_depth() == (0, None)

    def test_a_group_formed_again_has_a_new_thread(self, store: StateStore) -> None:
        store.apply_alerts(routed(alert("k1")), NOW)
        [item] = store.due_notifications(NOW)
        store.mark_sent(item, NOW, "ts-1")
        store.apply_alerts(AlertBatch(resolved=(alert("k1").resolved(NOW, "done"),)), NOW)
        [resolved] = store.due_notifications(NOW)
        store.mark_sent(resolved, NOW, None)
        later = NOW + timedelta(seconds=1)
        store.apply_alerts(AlertBatch(), later)  # its group_interval passed, still empty: gone
        store.apply_alerts(routed(alert("k2")), later)  # the same group key, formed again
        [again] = store.due_notifications(later)
        assert again.thread_key != item.thread_key
        assert not again.notification.follow_up

    def test_a_group_told_lives_until_its_interval_so_a_trickle_is_batched(
        self, store: StateStore
    ) -> None:
        """One-shot failures leave their group once told; the group stays until its next
        group_interval, so a failure a minute later waits for it and goes into the same
        thread (Alertmanager's group lifetime), instead of a message per failure."""
        timing = Timing(group_wait=timedelta(seconds=30), group_interval=timedelta(minutes=5))
        destination = Destination("slack", "slack|g1", (("team", "catalog"),), timing)

        def fire(key: str, at: datetime) -> list[Notification]:
            batch = AlertBatch(fired=(RoutedAlert(alert(key, one_shot=True), (destination,)),))
            return store.apply_alerts(batch, at)

        assert fire("k1", NOW) == []
        [first] = store.apply_alerts(AlertBatch(), NOW + timedelta(seconds=30))
        [item] = store.due_notifications(NOW + timedelta(seconds=30))
        store.mark_sent(item, NOW + timedelta(seconds=30), "ts-1")
        assert fire("k2", NOW + timedelta(minutes=1)) == []
        assert store.apply_alerts(AlertBatch(), NOW + timedelta(minutes=5)) == []
        [second] = store.apply_alerts(AlertBatch(), NOW + timedelta(minutes=5, seconds=30))
        assert [a.key for a in (*first.firing, *second.firing)] == ["k1", "k2"]
        assert second.follow_up
        [follow] = store.due_notifications(NOW + timedelta(minutes=6))
        assert follow.thread_key == item.thread_key

    def test_giving_up_raises_the_notice_in_the_same_write(self, store: StateStore) -> None:
        store.enqueue(Notification("slack", "g", (), (alert("a"),)), NOW)
        [item] = store.due_notifications(NOW)
        store.mark_dead(
            item,
            NOW,
            "channel_not_found",
            routed(alert("notice", one_shot=True), receiver="ops", group="fallback"),
        )
        [notice] = store.due_notifications(NOW)
        assert notice.receiver == "ops"
        assert notice.notification.firing[0].key == "notice"


class TestStatusStore:
    def test_alerts_show_their_receivers_and_old_one_shot_ones_leave_the_view(
        self, store: StateStore
    ) -> None:
        store.apply_alerts(routed(alert("stuck-1")), NOW)
        store.apply_alerts(routed(alert("failed-1", one_shot=True), receiver="mail"), NOW)
        [item] = [i for i in store.due_notifications(NOW) if i.receiver == "slack"]
        store.mark_sent(item, NOW, None)
        records = {r.alert.key: r for r in store.alert_records(since=NOW - timedelta(hours=1))}
        assert set(records) == {"stuck-1", "failed-1"}
        [told] = records["stuck-1"].receivers
        assert (told.receiver, told.told, told.last_sent) == ("slack", "firing", NOW)
        assert told.group_labels == (("team", "catalog"),)
        # A failure leaves its group once queued: its outcome says what became of it.
        assert records["failed-1"].receivers == ()
        assert records["failed-1"].outcome == "notified"
        later = NOW + timedelta(days=2)
        # A day later the one-shot failure is history; the stateful alert still fires.
        assert [r.alert.key for r in store.alert_records(since=later - timedelta(days=1))] == [
            "stuck-1"
        ]
        assert len(store.alert_records(since=NOW - timedelta(hours=1), limit=1)) == 1

    def test_the_outbox_view_shows_waiting_retrying_and_recent_outcomes(
        self, store: StateStore
    ) -> None:
        store.enqueue(Notification("slack", "g", (), (alert("a"),)), NOW)
        store.enqueue(Notification("mail", "g", (), (alert("b"),)), NOW)
        store.enqueue(Notification("hook", "g", (), (alert("c"),)), NOW)
        due = {i.receiver: i for i in store.due_notifications(NOW)}
        store.mark_retry(due["slack"], NOW + timedelta(minutes=1), "Slack rate limit (429)")
        store.mark_sent(due["mail"], NOW, None)
        store.mark_dead(due["hook"], NOW, "webhook answered 410")
        entries = {e.receiver: e for e in store.outbox_entries(since=NOW - timedelta(hours=1))}
        assert (entries["slack"].state, entries["slack"].attempts) == ("pending", 1)
        assert entries["slack"].last_error == "Slack rate limit (429)"
        assert entries["slack"].next_attempt == NOW + timedelta(minutes=1)
        assert entries["mail"].state == "sent"
        assert entries["hook"].state == "dead"
        assert entries["hook"].notification is not None
        assert entries["hook"].notification.firing[0].key == "c"
        # Outcomes older than ``since`` leave the view; what still waits never does.
        later = [e.receiver for e in store.outbox_entries(since=NOW + timedelta(seconds=1))]
        assert later == ["slack"]


class TestSilenceStore:
    def test_added_silences_live_until_expired(self, store: StateStore) -> None:
        silence = Silence("s1", parse_all(['team="catalog"']), NOW, NOW + timedelta(hours=1))
        store.add_silence(silence)
        assert store.silences() == [silence]
        assert store.expire_silence("s1", NOW + timedelta(minutes=5))
        [expired] = store.silences()
        assert expired.ends_at == NOW + timedelta(minutes=5)
        assert not store.expire_silence("nope", NOW)

    def test_configured_silences_are_replaced_added_ones_kept(self, store: StateStore) -> None:
        added = Silence("cli1", parse_all(['team="a"']), NOW, NOW + timedelta(hours=1))
        store.add_silence(added)
        first = Silence(
            "config:x", parse_all(['team="b"']), NOW, NOW + timedelta(hours=1), origin="config"
        )
        second = Silence(
            "config:y", parse_all(['team="c"']), NOW, NOW + timedelta(hours=1), origin="config"
        )
        store.sync_config_silences([first])
        store.sync_config_silences([second])
        assert {s.silence_id for s in store.silences()} == {"cli1", "config:y"}


# --- LeaseStore ------------------------------------------------------------------------------

TTL = timedelta(seconds=15)


class TestLeaseStore:
    def test_a_free_lease_is_taken_at_epoch_one_and_renewed_at_the_same(
        self, store: StateStore
    ) -> None:
        assert store.claim("r1", ["source:dr"], NOW, TTL) == {
            "source:dr": Lease("source:dr", "r1", 1)
        }
        later = NOW + timedelta(seconds=5)
        assert store.claim("r1", ["source:dr"], later, TTL)["source:dr"].epoch == 1
        [holder] = store.lease_holders()
        assert (holder.owner, holder.epoch, holder.expires) == ("r1", 1, later + TTL)
        assert store.live_replicas(later, TTL) == ["r1"]

    def test_a_held_lease_changes_hands_only_once_expired(self, store: StateStore) -> None:
        store.claim("r1", ["source:dr"], NOW, TTL)
        taken = store.claim("r2", ["source:dr"], NOW + timedelta(seconds=1), TTL)
        if store.exclusive:  # one process by construction: the newcomer is the only one
            assert taken == {"source:dr": Lease("source:dr", "r2", 2)}
            return
        assert taken == {}
        after = NOW + TTL + timedelta(milliseconds=1)
        assert store.claim("r2", ["source:dr"], after, TTL) == {
            "source:dr": Lease("source:dr", "r2", 2)
        }
        # r1 comes back: the lease is r2's now, and r1 is not told it still holds it.
        assert store.claim("r1", ["source:dr"], after, TTL) == {}

    def test_a_released_lease_is_taken_at_the_next_epoch(self, store: StateStore) -> None:
        store.claim("r1", ["source:dr", "receiver:slack"], NOW, TTL)
        store.claim("r1", ["receiver:slack"], NOW, TTL, release=["source:dr"])
        assert {h.name: h.owner for h in store.lease_holders()} == {
            "receiver:slack": "r1",
            "source:dr": None,
        }
        assert store.claim("r2", ["source:dr"], NOW, TTL) == {
            "source:dr": Lease("source:dr", "r2", 2)
        }

    def test_a_cycle_under_a_lost_lease_commits_nothing(self, store: StateStore) -> None:
        stale = store.claim("r1", ["source:dr"], NOW, TTL)["source:dr"]
        store.claim("r1", [], NOW, TTL, release=["source:dr"])
        store.claim("r2", ["source:dr"], NOW, TTL)
        with pytest.raises(LeaseLostError, match="held by r2 at epoch 2"):
            commit(store, [task("a", "FAILED")], lease=stale)
        assert store.tracked("dr", ["a"]) == {}
        assert store.needs_baseline("dr")
        fresh = store.claim("r2", ["source:dr"], NOW, TTL)["source:dr"]
        commit(store, [task("a", "FAILED")], lease=fresh)
        assert set(store.tracked("dr", ["a"])) == {"a"}

    def test_replicas_not_seen_within_the_ttl_are_not_live(self, store: StateStore) -> None:
        store.claim("r1", [], NOW, TTL)
        store.claim("r2", [], NOW + TTL, TTL)
        assert store.live_replicas(NOW + TTL, TTL) == ["r1", "r2"]
        assert store.live_replicas(NOW + TTL + timedelta(seconds=1), TTL) == ["r2"]
