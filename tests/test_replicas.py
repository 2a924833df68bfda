"""Several replicas on one real PostgreSQL: the work is shared, a SIGKILLed or paused
holder is taken over, a late cycle is fenced, a database restart loses nothing.

Each replica is a real ``taskwarden run`` process; the vendor and Slack are the loopback
simulators; PostgreSQL is the Debian server started by the fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest

from taskwarden.alerts import Alert, Notification, Severity
from taskwarden.outbox import DeliverySettings, OutboxSender
from taskwarden.service.leases import preferred
from taskwarden.simulator import Simulator
from taskwarden.simulator.faults import Fault
from taskwarden.simulator.server import running_simulator
from taskwarden.simulator.slack import SlackServer, running_slack
from taskwarden.state import open_state
from taskwarden.state.postgres import open_postgres

from .alerting_harness import receivers, slack_bot
from .conftest import API_KEY, T0
from .helpers import TASKWARDEN, free_port, subprocess_env, until
from .pgserver import PgServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

TTL = 3.0
"""state.lease_ttl of the replicas (the smallest allowed): takeover within 2 × TTL."""


def write_config(tmp: Path, sim: Simulator, slack: SlackServer, url: str, *sources: str) -> Path:
    (tmp / "teams").mkdir(parents=True, exist_ok=True)
    (tmp / "teams" / "catalog.yaml").write_text(
        "team: catalog\nrules:\n  - {name: failed, type: failed}\n"
    )
    feeds = "\n".join(
        f"  {name}: {{base_url: {sim.base_url}, interval: 1s, overlap: 30s, "
        "initial_lookback: 10m, retry_attempts: 1}"
        for name in sources or ("dr",)
    )
    config = tmp / "replica.yaml"
    config.write_text(
        f"""\
state: {{url: "{url}", lease_ttl: {TTL:g}s}}
sources:
{feeds}
teams: ["teams/*.yaml"]
receivers:
  slack: {{slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0s}}}}
  ops: {{console: true}}
route: {{receiver: slack, group_by: [team, rule, kind], group_wait: 0s, group_interval: 1s}}
notifications: {{fallback_receiver: [ops, slack]}}
daemon: {{deliver_interval: 0.2s, shutdown_grace: 5s}}
"""
    )
    return config


@dataclass
class Replica:
    config: Path
    slack: SlackServer
    sources: tuple[str, ...]
    log: Path
    health: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Replica:
        keys = {f"TASKWARDEN_SOURCES__{s.upper()}__API_KEY": API_KEY for s in self.sources}
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *TASKWARDEN, "--log-format=json", "run", "-c", str(self.config),
                env=subprocess_env(
                    TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN=self.slack.token,
                    TASKWARDEN_DAEMON__HEALTH_BIND=f"127.0.0.1:{self.health}",
                    **keys,
                ),
                stdout=out, stderr=out,
            )  # fmt: skip
        await until(self.healthy, within=30)
        return self

    async def healthy(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                answer = await http.get(f"http://127.0.0.1:{self.health}/healthz")
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    async def readyz(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=2) as http:
            answer = await http.get(f"http://127.0.0.1:{self.health}/readyz")
        body: dict[str, Any] = answer.json()
        return body

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def owns(self, owner: str | None) -> bool:
        return owner is not None and owner.split(":")[1] == str(self.pid)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == name:
                    found.append(record)
        return found


class Database:
    """The test's own view of the replicas' database."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def holder(self, lease: str) -> tuple[str | None, int]:
        found = self.rows("SELECT owner, epoch FROM leases WHERE name = %s", lease)
        return (found[0][0], int(found[0][1])) if found else (None, 0)

    def last_success_ms(self, source: str) -> int:
        found = self.rows("SELECT last_success_ms FROM sources WHERE source = %s", source)
        return int(found[0][0] or 0) if found else 0

    def sent_order_holds(self, receiver: str) -> bool:
        """Each receiver's entries were sent in the order they were made."""
        ids = [
            r[0]
            for r in self.rows(
                "SELECT id FROM outbox WHERE receiver = %s AND state = 'sent' ORDER BY done_ms, id",
                receiver,
            )
        ]
        return ids == sorted(ids)

    def settled(self, replicas: int) -> bool:
        """Every replica is live and every lease is with the replica preferred for it."""
        owners = [
            str(r[0])
            for r in self.rows(
                "SELECT owner FROM replicas WHERE seen_ms >= %s", int((time.time() - TTL) * 1000)
            )
        ]
        leases = self.rows("SELECT name, owner FROM leases")
        return len(owners) == replicas and all(
            owner is not None and preferred([name], owners, owner) == [name]
            for name, owner in leases
        )

    def transitions_to_failed(self) -> dict[str, int]:
        rows = self.rows(
            "SELECT task_id, COUNT(*) FROM journal WHERE new_status = 'FAILED' GROUP BY task_id"
        )
        return {str(r[0]): int(r[1]) for r in rows}


def migrated(url: str) -> Database:
    open_postgres(url, apply_migrations=True).close()
    return Database(url)


@contextlib.asynccontextmanager
async def replicas(
    count: int, tmp: Path, sim: Simulator, slack: SlackServer, url: str, *sources: str
) -> AsyncIterator[list[Replica]]:
    config = write_config(tmp, sim, slack, url, *sources)
    started: list[Replica] = []
    try:
        for i in range(count):
            replica = Replica(config, slack, sources or ("dr",), tmp / f"replica{i}.log")
            started.append(await replica.start())
        yield started
    finally:
        for replica in started:
            await replica.stop()


@contextlib.asynccontextmanager
async def vendor_and_slack() -> AsyncIterator[tuple[Simulator, SlackServer]]:
    async with (
        running_simulator(Simulator(api_key=API_KEY, seed=5)) as sim,
        running_slack(SlackServer(min_interval=None, channels=("alerts", "ops"))) as slack,
    ):
        yield sim, slack


def told(slack: SlackServer, task_ids: Iterator[str] | list[str]) -> dict[str, int]:
    return {t: sum(t in m.raw for m in slack.messages) for t in task_ids}


def fail_task(sim: Simulator) -> str:
    task = sim.add_task(status="PROCESSING")
    sim.set_status(task.task_id, "FAILED")
    return task.task_id


async def test_three_replicas_share_the_sources(tmp_path: Path, pg_url: str) -> None:
    db = migrated(pg_url)
    names = ("dr", "dr_b", "dr_c", "dr_d", "dr_e", "dr_f")
    async with (
        vendor_and_slack() as (sim, slack),
        replicas(3, tmp_path, sim, slack, pg_url, *names) as running,
    ):

        def spread() -> bool:
            owners = [db.holder(f"source:{n}")[0] for n in names]
            holders = {o.split(":")[1] for o in owners if o is not None}
            return None not in owners and len(holders) >= 2

        await until(spread, within=6 * TTL)
        await until(lambda: all(db.last_success_ms(n) for n in names), within=4 * TTL)
        await until(lambda: db.settled(3), within=4 * TTL)
        # Every replica is ready: its own sources polled, the others' held by a live replica.
        for replica in running:

            async def ready(replica: Replica = replica) -> bool:
                return bool((await replica.readyz())["ready"])

            await until(ready, within=2 * TTL)
        assert db.rows("SELECT COUNT(*) FROM replicas")[0][0] == 3


async def test_a_killed_holder_is_taken_over_and_every_failure_told_once(
    tmp_path: Path, pg_url: str
) -> None:
    db = migrated(pg_url)
    failed: list[str] = []
    takeovers: list[float] = []
    async with (
        vendor_and_slack() as (sim, slack),
        replicas(3, tmp_path, sim, slack, pg_url) as running,
    ):
        await until(lambda: db.last_success_ms("dr") > 0 and db.settled(3), within=4 * TTL)
        for round_no in range(3):
            failed += [fail_task(sim) for _ in range(2)]
            holder = next(r for r in running if r.owns(db.holder("source:dr")[0]))
            before = db.holder("source:dr")[1]
            holder.signal(signal.SIGKILL)
            killed_at = time.time()
            await holder.proc.wait()  # type: ignore[union-attr]

            def taken_over(epoch: int = before) -> bool:
                return db.holder("source:dr")[1] > epoch

            await until(taken_over, within=3 * TTL)
            await until(lambda t=killed_at: db.last_success_ms("dr") > t * 1000, within=2 * TTL)
            takeovers.append(db.last_success_ms("dr") / 1000 - killed_at)
            running.remove(holder)
            running.append(
                await Replica(
                    holder.config, slack, ("dr",), tmp_path / f"restarted{round_no}.log"
                ).start()
            )
            failed += [fail_task(sim) for _ in range(2)]
            await until(lambda: db.settled(3), within=4 * TTL)
        await until(lambda: all(told(slack, failed).values()), within=30)
        counts = told(slack, failed)
        duplicates = sum(c - 1 for c in counts.values())
        assert duplicates <= 3, counts  # at most one per kill
        assert max(takeovers) < 2 * TTL + 1.5, takeovers  # 2 × TTL, plus one poll interval
        assert db.sent_order_holds("slack")
        assert all(n == 1 for n in db.transitions_to_failed().values())
        # running replicas are stopped by the fixture; the killed ones released nothing
        for replica in running:
            await replica.stop()
    assert all(db.holder(f"source:{n}")[0] is None for n in ("dr",))  # released on SIGTERM


async def test_a_paused_holder_cannot_commit_its_late_cycle(tmp_path: Path, pg_url: str) -> None:
    db = migrated(pg_url)
    async with (
        vendor_and_slack() as (sim, slack),
        replicas(2, tmp_path, sim, slack, pg_url) as running,
    ):
        await until(lambda: db.last_success_ms("dr") > 0 and db.settled(2), within=4 * TTL)
        holder = next(r for r in running if r.owns(db.holder("source:dr")[0]))
        other = next(r for r in running if r is not holder)
        _, epoch = db.holder("source:dr")
        # Its next cycle hangs on a slow vendor answer; pause it in the middle of it.
        sim.inject(Fault("slow", endpoint="dr.list", delay=2 * TTL))
        await until(lambda: sim.faults.peek("dr.list") is None, within=4 * TTL)
        holder.signal(signal.SIGSTOP)
        await until(lambda: other.owns(db.holder("source:dr")[0]), within=3 * TTL)
        assert db.holder("source:dr")[1] == epoch + 1
        task_id = fail_task(sim)
        await until(lambda: told(slack, [task_id])[task_id] > 0, within=4 * TTL)
        holder.signal(signal.SIGCONT)  # its slow answer arrives; the cycle tries to commit
        await until(lambda: bool(holder.events("poll.fenced")), within=4 * TTL)
        [fenced] = holder.events("poll.fenced")
        assert f"began at epoch {epoch}" in fenced["reason"]
        assert told(slack, [task_id])[task_id] == 1
        assert all(n == 1 for n in db.transitions_to_failed().values())


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL of the test's own: it is stopped and restarted."""
    server = PgServer().start()
    yield server
    server.close()


async def test_a_database_restart_loses_nothing_and_readyz_says_so(
    tmp_path: Path, own_pg: PgServer
) -> None:
    url = own_pg.new_database()
    db = migrated(url)
    async with (
        vendor_and_slack() as (sim, slack),
        replicas(1, tmp_path, sim, slack, url) as [replica],
    ):
        await until(lambda: db.last_success_ms("dr") > 0, within=4 * TTL)
        first = fail_task(sim)
        await until(lambda: told(slack, [first])[first] > 0, within=10)
        own_pg.kill()  # a crash, not a shutdown: connections drop mid-transaction
        during = [fail_task(sim) for _ in range(3)]

        async def not_ready() -> bool:
            body = await replica.readyz()
            return not body["ready"] and "daemon:leases" in body["sources"]

        async def ready() -> bool:
            return bool((await replica.readyz())["ready"])

        await until(not_ready, within=3 * TTL)
        own_pg.resume()
        await until(lambda: all(told(slack, during).values()), within=30)
        await until(ready, within=4 * TTL)
        counts = told(slack, [first, *during])
        assert all(c == 1 for c in counts.values()), counts


async def test_a_sender_that_loses_the_receiver_lease_stops_after_the_message_in_flight(
    tmp_path: Path, slack: SlackServer
) -> None:
    """The batch a paused replica fetched before its lease lapsed is not sent on: only the
    message in flight may go out twice (the new holder sends the rest)."""
    store = open_state(tmp_path / "state.db", now=T0)
    for n in range(3):
        alert = Alert(
            key=f"k{n}", rule="failed", source="dr", severity=Severity.CRITICAL,
            labels=(("team", "catalog"),), title=f"alert k{n}", starts_at=T0,
        )  # fmt: skip
        store.enqueue(Notification("slack", "g", (), (alert,)), T0)
    sender = OutboxSender(
        store,
        receivers({"slack": slack_bot(slack)}),
        DeliverySettings(),
        clock=lambda: T0,
        deliver_to=lambda: set() if slack.messages else {"slack"},
    )
    report = await sender.deliver_due()
    assert report.total_sent == 1
    assert len(slack.messages) == 1
    assert store.outbox_depth()[0] == 2
    store.close()
