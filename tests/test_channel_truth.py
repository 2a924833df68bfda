"""What a channel shows must be true (issue 12): per-receiver order under 429s and 5xx,
thread identity, Elastic Path's clock and paging order, counters that count once, and
source-health timing from the first failed request. Against the simulator and the
loopback Slack; time is the simulator's frozen clock."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
import structlog

from taskwarden.alerts import Severity
from taskwarden.poller import CycleReport
from taskwarden.rules import BurstRule, StuckRule, Team
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.sources.elasticpath import ElasticPathSource
from taskwarden.state import open_state
from taskwarden.state.schema import MIGRATIONS

from .alerting_harness import Harness, failed_with, slack_bot, slack_hook, tree
from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import ElasticPathJobs
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.sources.digitalriver import DigitalRiverClient
    from taskwarden.sources.elasticpath import ElasticPathClient
    from taskwarden.state import SqliteStateStore

STUCK = Team("catalog", (StuckRule("stuck", "catalog", after=timedelta(hours=2)),))


@pytest.fixture
def harness(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, slack: SlackServer
) -> Harness:
    return Harness(
        sim=sim,
        source=DigitalRiverSource(dr_client),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(STUCK,),
        route=tree(group_wait=timedelta(0), group_interval=timedelta(0)),
    )


async def round_at(h: Harness, slack: SlackServer, advance: timedelta) -> int:
    """One delivery round after ``advance``: how many requests reached Slack."""
    h.sim.advance_clock(advance)
    before = slack.received
    await h.sender.deliver_due()
    return slack.received - before


# --- 1. a receiver is a FIFO; Retry-After pauses its target ---------------------------------


async def test_a_resolution_never_overtakes_its_firing_message(
    harness: Harness, slack: SlackServer
) -> None:
    """FIRING is answered 429 (Retry-After: 3); the task finishes a second later. The
    RESOLVED notice waits behind FIRING, nothing reaches Slack before the 3 s pass, and
    RESOLVED then goes into FIRING's thread."""
    sim = harness.sim
    await harness.cycle()
    task = sim.add_task(status="PROCESSING", request_type="PRODUCT_IMPORT")
    await harness.cycle()
    await harness.poll(timedelta(hours=2))  # stuck: FIRING enqueued
    slack.inject(Fault("rate_limit", retry_after=3, endpoint="slack.postMessage"))
    assert await round_at(harness, slack, timedelta(0)) == 1  # the 429
    sim.set_status(task.task_id, "COMPLETED")
    await harness.poll(timedelta(seconds=1))  # RESOLVED enqueued behind it
    assert await round_at(harness, slack, timedelta(0)) == 0
    assert await round_at(harness, slack, timedelta(seconds=1)) == 0  # t+2 s: still paused
    assert await round_at(harness, slack, timedelta(seconds=1)) == 2  # t+3 s: both, in order
    firing, resolved = slack.messages
    assert firing.text.startswith("[WARNING] FIRING")
    assert resolved.text.startswith("[RESOLVED]")
    assert resolved.thread_ts == firing.ts


async def test_order_holds_through_an_outage_of_429s_and_5xx(
    harness: Harness, slack: SlackServer
) -> None:
    """Five stuck tasks fire, a minute of 429s and 5xx follows while they finish: every
    message arrives in outbox order, each RESOLVED after its FIRING and in its thread, and
    no request reaches Slack while a Retry-After holds."""
    sim = harness.sim
    await harness.cycle()
    kinds = [f"KIND_{i}" for i in range(5)]
    tasks = [sim.add_task(status="PROCESSING", request_type=k) for k in kinds]
    await harness.cycle()
    await harness.poll(timedelta(hours=2))
    for second in range(60):
        if second % 10 == 0:
            slack.inject(Fault("rate_limit", retry_after=4, endpoint="slack.postMessage"))
            assert await round_at(harness, slack, timedelta(seconds=1)) <= 1
            for _ in range(3):  # the pause: nothing at all reaches the target
                assert await round_at(harness, slack, timedelta(seconds=1)) == 0
        elif second % 10 == 5:
            slack.inject(Fault("server_error", status=503, endpoint="slack.postMessage"))
            await round_at(harness, slack, timedelta(seconds=1))
        else:
            await round_at(harness, slack, timedelta(seconds=1))
        if second == 20:
            for task in tasks:
                sim.set_status(task.task_id, "COMPLETED")
            await harness.poll(timedelta(0))
    await harness.deliver_until_empty(step=timedelta(seconds=5))
    sent = [r for r in harness.store.outbox() if r["receiver"] == "slack"]
    assert [r["state"] for r in sent] == ["sent"] * 10
    assert len(slack.messages) == 10
    for kind in kinds:
        [firing] = [m for m in slack.messages if kind in m.text and "FIRING" in m.text]
        [resolved] = [m for m in slack.messages if kind in m.text and "RESOLVED" in m.text]
        assert slack.messages.index(firing) < slack.messages.index(resolved)
        assert resolved.thread_ts == firing.ts


# --- 2. thread identity ----------------------------------------------------------------------


async def test_a_reused_group_never_inherits_an_old_thread(
    harness: Harness, slack: SlackServer
) -> None:
    """A group that emptied is gone; the next group must not find its thread (its row id
    was reused, and its resolution went into an unrelated message's thread)."""
    sim = harness.sim
    await harness.cycle()
    first = sim.add_task(status="PROCESSING", request_type="PRODUCT_IMPORT")
    await harness.cycle()
    await harness.cycle(timedelta(hours=2))
    sim.set_status(first.task_id, "COMPLETED")
    await harness.cycle()  # FIRING and RESOLVED of the first group; it empties
    second = sim.add_task(status="PROCESSING", request_type="UPDATE_PRODUCT")
    await harness.cycle()
    await harness.cycle(timedelta(hours=2))
    sim.set_status(second.task_id, "COMPLETED")
    await harness.cycle()
    firing1, resolved1, firing2, resolved2 = slack.messages
    assert resolved1.thread_ts == firing1.ts
    assert firing2.thread_ts is None
    assert resolved2.thread_ts == firing2.ts  # not firing1.ts
    assert "UPDATE_PRODUCT" in resolved2.text


def test_the_v4_migration_keeps_only_threads_that_belong(tmp_path: Path) -> None:
    """A v3 file: group 1 holds a thread row from an older group 1 (before the current
    group existed) and a pending entry; the migrated file keys threads by group key and
    serial, keeps the pending entry's thread, and drops the stale one."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2, 3):
        for statement in MIGRATIONS[version].split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.execute(
        "INSERT INTO groups (id, receiver, group_key, labels, wait_ms, interval_ms, repeat_ms, "
        "send_resolved, created_ms) VALUES (1, 'slack', 'slack|0|[\"b\"]', '[]', 0, 0, 0, 1, 5000)"
    )
    conn.execute(  # the thread of an older group 1, gone before this one was created
        "INSERT INTO threads VALUES (1, 'slack', 'old-ts', 1000)"
    )
    conn.execute(  # a follow-up of a deleted group 7, whose thread must be kept
        "INSERT INTO threads VALUES (7, 'slack', 'ts-7', 2000)"
    )
    conn.execute(
        "INSERT INTO outbox (receiver, group_id, payload, created_ms, next_attempt_ms) "
        'VALUES (\'slack\', 7, \'{"v":1,"groupKey":"slack|0|[\\"a\\"]"}\', 3000, 3000)'
    )
    conn.close()
    store = open_state(path, now=T0)
    try:
        rows = {r["thread_key"]: r["ref"] for r in store._conn.execute("SELECT * FROM threads")}  # type: ignore[attr-defined]
        assert rows == {'slack|0|["a"]#7': "ts-7"}
        [pending] = store.outbox()
        assert pending["thread_key"] == 'slack|0|["a"]#7'
        new_group = store._conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO groups (receiver, group_key, labels, wait_ms, interval_ms, repeat_ms, "
            "send_resolved, created_ms) VALUES ('slack', 'k', '[]', 0, 0, 0, 1, 0)"
        ).lastrowid
        assert new_group > 7  # never an id a thread or entry used
    finally:
        store.close()


# --- 3 and 4. Elastic Path: the vendor's clock and an order the docs do not state -----------


@pytest.fixture
def ep_harness(
    sim: Simulator, ep_client: ElasticPathClient, store: SqliteStateStore, slack: SlackServer
) -> Harness:
    from taskwarden.rules import FailedRule

    team = Team("catalog", (FailedRule("failed", "catalog"),))
    return Harness(
        sim=sim,
        source=ElasticPathSource(ep_client),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(team,),
        route=tree(group_by=("...",)),
    )


@pytest.mark.parametrize("skew", [timedelta(minutes=8), timedelta(minutes=-8)])
async def test_every_failed_job_is_told_whatever_the_clocks_say(
    ep_harness: Harness, ep_jobs: ElasticPathJobs, slack: SlackServer, skew: timedelta
) -> None:
    """Our clock 8 minutes ahead of the vendor's (or behind): the checkpoint follows the
    vendor's clock, so all 6 failed jobs are told (none were, ahead), and the skew is
    logged."""
    ep_harness.skew = skew
    with structlog.testing.capture_logs() as logs:
        await ep_harness.cycle()  # baseline
        jobs = [ep_jobs.add_job(status="started") for _ in range(6)]
        await ep_harness.cycle()
        for job in jobs:
            ep_jobs.set_status(job.job_id, "failed")
        await ep_harness.cycle()
    await ep_harness.deliver_until_empty()
    told = {j.job_id for j in jobs if any(j.job_id in m.raw for m in slack.messages)}
    assert told == {j.job_id for j in jobs}
    [warning] = [e for e in logs if e["event"] == "source.clock_skew"]  # once, not per poll
    assert warning["local_minus_vendor_seconds"] == pytest.approx(skew.total_seconds(), abs=2)


@pytest.mark.parametrize("order", ["oldest_first", "unsorted", "newest_first"])
async def test_new_jobs_are_seen_whatever_the_listing_order(
    ep_harness: Harness, ep_jobs: ElasticPathJobs, slack: SlackServer, order: str
) -> None:
    sim = ep_harness.sim
    ep_jobs.order = order  # type: ignore[assignment]
    for i in range(250):  # three pages of history
        ep_jobs.add_job(status="success", created_ms=sim.now_ms() - 3_600_000 - i * 1000)
    await ep_harness.cycle()  # baseline
    fresh = [ep_jobs.add_job(status="failed") for _ in range(3)]
    await ep_harness.cycle()
    await ep_harness.deliver_until_empty()
    assert all(any(j.job_id in m.raw for m in slack.messages) for j in fresh)
    before = sim.requests["ep.list"]
    await ep_harness.poll()  # idle
    idle_calls = sim.requests["ep.list"] - before
    # The one-call idle poll is only used once a whole listing came newest first.
    assert idle_calls == (1 if order == "newest_first" else 3)


# --- 7. counters count events once ---------------------------------------------------------


async def test_an_active_burst_is_fired_once_not_every_poll(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, slack: SlackServer
) -> None:
    team = Team(
        "catalog",
        (BurstRule("burst", "catalog", threshold=5, window=timedelta(minutes=30)),),
    )
    h = Harness(
        sim=sim,
        source=DigitalRiverSource(dr_client),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(team,),
    )
    await h.cycle()
    tasks = [sim.add_task(status="PROCESSING") for _ in range(6)]
    await h.cycle()
    for task in tasks:
        sim.set_status(task.task_id, "FAILED")
    first = await h.cycle()
    assert isinstance(first, CycleReport)
    assert first.alerts_fired == 1
    for _ in range(3):  # the burst stays active: its counts refresh, it is not fired again
        idle = await h.cycle()
        assert isinstance(idle, CycleReport)
        assert idle.alerts_fired == 0


# --- 9. source health counts from the first failed request ---------------------------------


async def test_an_outage_alerts_when_it_has_lasted_not_a_cycle_later(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, slack: SlackServer
) -> None:
    """Each request of a failing cycle costs 3 s (4 attempts: 12 s) and
    ``unreachable_after`` is 8 s: the first failing cycle has failed for 12 s when it ends,
    so it alerts then (the second cycle used to, starting its count at the cycle's start
    and ending it there too)."""
    from taskwarden.health import HealthSettings

    h = Harness(
        sim=sim,
        source=DigitalRiverSource(dr_client),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(),
        health=HealthSettings(
            labels=(("team", "ops"),),
            unreachable_after=timedelta(seconds=8),
            severity=Severity.CRITICAL,
        ),
    )
    await h.cycle()
    sim.inject(Fault("server_error", remaining=10_000, status=503))
    sim.advance_per_request = timedelta(seconds=3)
    started = sim.now()
    result = await h.poll(timedelta(0))
    assert failed_with(result, Exception)
    await h.sender.deliver_due()
    [alert] = slack.messages
    assert "polling has failed for 12s" in alert.text
    assert sim.now() - started == timedelta(seconds=12)
