"""``make chaos``: taskwarden under hostile input and random SIGKILLs, one table of figures.

Each attack runs against real parts on loopback (the simulator with its hostile faults,
the Slack-compatible endpoint, a real SQLite file, a real tmpfs when root, the real daemon
as a subprocess where memory or killing it matters) and ends in one row:
attack → held / broke, with what was measured (lost, duplicates, time to alert, peak RSS).

    python bench/chaos.py            # everything (a few minutes)
    python bench/chaos.py --smoke    # the quick subset `make test` runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import structlog

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "daemon"))
sys.path.insert(0, str(HERE.parent))  # tests.pgserver: a real PostgreSQL on loopback

from tests.pgserver import PgServer  # noqa: E402

from taskwarden.alerting import Alerting  # noqa: E402 - after sys.path
from taskwarden.errors import RateLimitedError, StateCorruptError  # noqa: E402
from taskwarden.logs import configure_logging  # noqa: E402
from taskwarden.matchers import Matcher  # noqa: E402
from taskwarden.notify.slack import SlackBotNotifier  # noqa: E402
from taskwarden.outbox import DeliverySettings, OutboxSender, Receiver  # noqa: E402
from taskwarden.poller import CycleReport, PollFailed, PollSettings, poll_or_report  # noqa: E402
from taskwarden.routing import Route  # noqa: E402
from taskwarden.rules import FailedRule, StuckRule, Team  # noqa: E402
from taskwarden.simulator import Simulator, running_simulator  # noqa: E402
from taskwarden.simulator.faults import Fault  # noqa: E402
from taskwarden.simulator.slack import SlackServer, running_slack  # noqa: E402
from taskwarden.sources.digitalriver import (  # noqa: E402
    DigitalRiverClient,
    DigitalRiverSource,
    TaskQuery,
    make_auth,
)
from taskwarden.sources.http import RetryPolicy  # noqa: E402
from taskwarden.state import open_state  # noqa: E402
from taskwarden.state.postgres import open_postgres  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

KEY = "chaos-api-key-0123"
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
K8S_LIMIT_MB = 256
"""The Kubernetes manifest's memory limit (deploy/kubernetes/single/deployment.yaml)."""
TEAM = Team(
    "catalog",
    (FailedRule("failed", "catalog"), StuckRule("stuck", "catalog", after=timedelta(hours=2))),
)


@dataclass
class Row:
    attack: str
    held: bool
    figures: str


ROWS: list[Row] = []


def report(attack: str, *, held: bool, figures: str) -> None:
    ROWS.append(Row(attack, held, figures))
    print(f"  {'held ' if held else 'BROKE'}  {attack}: {figures}", flush=True)


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    out.update(PYTHONPATH=str(HERE.parent / "daemon"), **extra)
    return out


def client(sim: Simulator, http: httpx.AsyncClient, **kw: Any) -> DigitalRiverClient:
    kw.setdefault("retry", RetryPolicy(attempts=3, total_timeout=10, wait_initial=0.01))
    return DigitalRiverClient(
        http, base_url=sim.base_url, auth=make_auth("basic", KEY), source_name="dr", **kw
    )


async def poll(
    sim: Simulator, store: Any, source: DigitalRiverSource, settings: PollSettings | None = None
) -> CycleReport | PollFailed:
    sim.advance_clock(timedelta(minutes=1))
    return await poll_or_report(
        source, store, settings or PollSettings(), sim.now, alerting=Alerting()
    )


# --- hostile vendor answers (in process) -----------------------------------------------------


async def vendor_attacks(sim: Simulator, http: httpx.AsyncClient, tmp: Path) -> None:
    store = open_state(tmp / "vendor.db", now=sim.now())
    source = DigitalRiverSource(client(sim, http))
    try:
        await poll(sim, store, source)
        bad = [
            {"taskId": "a", "taskStatus": "FAILED", "receivedTime": "9999-12-31T23:59:59-01:00"},
            {"taskId": "b", "taskStatus": "FAILED", "receivedTime": "0001-01-01T00:00:00+01:00"},
            None,
            {"taskId": "c\r\nX: y", "taskStatus": "FAILED", "receivedTime": "2026-03-01T11:00:00Z"},
            7,
            {"taskId": "d"},
        ]
        good = sim.add_task(status="FAILED", received=sim.now())
        sim.inject(Fault("mangle", records=bad, append=True, endpoint="dr.list"))
        sim.inject(Fault("mangle", patch={"totalSize": "many"}, endpoint="dr.list"))
        first = await poll(sim, store, source)
        second = await poll(sim, store, source)
        rejected = sum(first.rejected.values()) if isinstance(first, CycleReport) else -1
        held = (
            isinstance(first, CycleReport)
            and isinstance(second, CycleReport)
            and rejected == len(bad)
            and good.task_id in store.tracked("dr", [good.task_id])
        )
        report(
            "six unusable records and a wrong-typed totalSize",
            held=held,
            figures=f"polls ok 2/2, {rejected} records rejected and counted, the rest read",
        )

        sim.inject(Fault("deep_json", size=100_000, endpoint="dr.list"))
        failed = await poll(sim, store, source)
        recovered = await poll(sim, store, source)
        report(
            "JSON nested 100,000 deep",
            held=isinstance(failed, PollFailed) and isinstance(recovered, CycleReport),
            figures="a recorded failed poll, the next one fine",
        )

        trickling = DigitalRiverSource(
            client(sim, http, retry=RetryPolicy(attempts=10, total_timeout=600))
        )
        sim.inject(Fault("trickle", delay=1.0, remaining=100, endpoint="dr.list"))
        started = time.monotonic()
        result = await poll(sim, store, trickling, PollSettings(deadline=timedelta(seconds=5)))
        took = time.monotonic() - started
        sim.faults.clear()
        report(
            "an answer trickled at 1 byte/s (cycle deadline 5 s)",
            held=isinstance(result, PollFailed) and took < 6,
            figures=f"cycle ended as a failed poll after {took:.1f} s",
        )

        waiting = client(sim, http, retry=RetryPolicy(attempts=5, total_timeout=60))
        sim.inject(Fault("rate_limit", retry_after=3600, endpoint="dr.list"))
        started = time.monotonic()
        with contextlib.suppress(RateLimitedError):
            await waiting.list_page(TaskQuery())
        took = time.monotonic() - started
        sim.faults.clear()
        report(
            "Retry-After: 3600 against retry_total 60 s",
            held=took < 60,
            figures=f"request gave up after {took:.2f} s (not 120 s, not an hour)",
        )

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sim.inject(Fault("gzip_bomb", size=512 << 20, endpoint="dr.list"))
        with contextlib.suppress(Exception):
            await client(sim, http).list_page(TaskQuery())
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        report(
            "gzip bomb (512 MiB inflated, 16 MiB limit)",
            held=grew < 64,
            figures=f"refused at the limit; peak RSS grew {grew:.0f} MB",
        )
    finally:
        store.close()


async def endless_cursors(sim: Simulator, tmp: Path, *, pages: int | None) -> None:
    """The real ``taskwarden once`` as a process: its own peak RSS against the limit."""
    config = tmp / "endless.yaml"
    cap = f", max_pages_per_cycle: {pages}" if pages else ""
    config.write_text(
        f"state: {{path: {tmp / 'endless.db'}}}\n"
        f"sources: {{dr: {{base_url: {sim.base_url}, cycle_deadline: 10m{cap}}}}}\n"
    )
    sim.inject(Fault("endless_cursor", remaining=1_000_000, endpoint="dr.list"))
    before = sim.requests["dr.list"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskwarden", "once", "-c", str(config),
        env=env(TASKWARDEN_SOURCES__DR__API_KEY=KEY),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    peak = 0.0
    while proc.returncode is None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=0.05)
    sim.faults.clear()
    read = sim.requests["dr.list"] - before
    limit = pages or 3_000
    report(
        f"endless unique cursors ({limit:,} pages per cycle"
        + (", the default)" if not pages else ")"),
        held=proc.returncode == 1 and read <= limit and peak < K8S_LIMIT_MB * 0.75,
        figures=f"{read:,} pages then a failed poll (exit {proc.returncode}); "
        f"peak RSS {peak:.0f} MB of the {K8S_LIMIT_MB} Mi limit",
    )


# --- delivery ---------------------------------------------------------------------------------


async def slack_outage(http: httpx.AsyncClient, tmp: Path) -> None:
    """A minute of 429s (Retry-After: 4) and 503s while stuck tasks fire and finish."""
    sim = Simulator(api_key=KEY)
    sim.freeze_clock(T0)
    async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
        store = open_state(tmp / "outage.db", now=sim.now())
        bot = SlackBotNotifier("slack", slack.token, "alerts", base_url=slack.api_url, timeout=5)
        route = Route(
            receiver="slack",
            group_by=("team", "rule", "kind"),
            group_wait=timedelta(0),
            group_interval=timedelta(0),
        )
        alerting = Alerting(teams=(TEAM,), route=route)
        sender = OutboxSender(
            store,
            {"slack": Receiver(bot)},
            DeliverySettings(backoff_initial=timedelta(seconds=1)),
            clock=sim.now,
        )
        source = DigitalRiverSource(client(sim, http))

        async def cycle() -> None:
            await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting)

        try:
            await cycle()
            tasks = [sim.add_task(status="PROCESSING", request_type=f"K{i}") for i in range(8)]
            sim.advance_clock(timedelta(hours=2, minutes=1))
            await cycle()
            violations = 0
            paused_until = sim.now()
            for second in range(60):
                fault = None
                if second % 7 == 0:
                    fault = Fault("rate_limit", retry_after=4, endpoint="slack.postMessage")
                elif second % 7 == 3:
                    fault = Fault("server_error", status=503, endpoint="slack.postMessage")
                if fault is not None:
                    slack.inject(fault)
                if second == 25:
                    for task in tasks:
                        sim.set_status(task.task_id, "COMPLETED")
                    await cycle()
                before = slack.received
                await sender.deliver_due()
                if sim.now() < paused_until and slack.received > before:
                    violations += 1
                if fault is not None and fault.kind == "rate_limit" and fault.remaining == 0:
                    paused_until = sim.now() + timedelta(seconds=4)
                slack.faults.clear()
                sim.advance_clock(timedelta(seconds=1))
            for _ in range(200):  # the outage is over: backoffs elapse, everything goes out
                await sender.deliver_due()
                if store.outbox_depth()[0] == 0:
                    break
                sim.advance_clock(timedelta(seconds=30))
            wrong = _order_or_thread_wrong(slack, [t.request_type for t in tasks])
            lost = 16 - len(slack.messages)
            report(
                "Slack outage, 60 s of 429 (Retry-After 4) and 503",
                held=lost == 0 and wrong == 0 and violations == 0,
                figures=f"16 messages: lost {lost}, out of order or thread {wrong}, "
                f"requests during a Retry-After {violations}",
            )
        finally:
            store.close()


def _order_or_thread_wrong(slack: SlackServer, kinds: list[str]) -> int:
    """Kinds whose RESOLVED is missing, before its FIRING, or outside its thread."""
    wrong = 0
    for kind in kinds:
        firing = [m for m in slack.messages if kind in m.text and "FIRING" in m.text]
        resolved = [m for m in slack.messages if kind in m.text and "RESOLVED" in m.text]
        if (
            not firing
            or not resolved
            or slack.messages.index(resolved[0]) < slack.messages.index(firing[0])
            or resolved[0].thread_ts != firing[0].ts
        ):
            wrong += 1
    return wrong


# --- the state file -----------------------------------------------------------------------------


async def corruption(sim: Simulator, http: httpx.AsyncClient, tmp: Path, files: int) -> None:
    original = tmp / "original.db"
    store = open_state(original, now=sim.now())
    source = DigitalRiverSource(client(sim, http))
    alerting = Alerting(teams=(TEAM,), route=Route(receiver="slack"))
    sim.generate(400, begin=sim.now() - timedelta(hours=20), end=sim.now(), open_share=0.2)
    for _ in range(3):
        for task in list(sim.tasks.by_id.values())[:30]:
            if task.status in ("PUBLISHED", "PROCESSING"):
                sim.set_status(task.task_id, "FAILED")
        sim.advance_clock(timedelta(hours=1))
        await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting)
    store.close()
    outcomes: dict[str, int] = {}
    loops = 0
    for seed in range(files):
        path = tmp / f"corrupt-{seed}.db"
        shutil.copy(original, path)
        data = bytearray(path.read_bytes())
        rng = random.Random(seed)
        for _ in range(rng.randint(1, 12)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        for attempt in range(2):
            try:
                with open_state(path, now=sim.now()) as opened:
                    recovered = opened.get_meta("recovered_from") is not None
                    try:
                        opened.summary()
                        opened.due_notifications(sim.now())
                        result = await poll_or_report(
                            source, opened, PollSettings(), sim.now, alerting=alerting
                        )
                    except StateCorruptError as exc:
                        opened.quarantine(sim.now(), str(exc))
                        outcome = "moved aside while running"
                    else:
                        ok = isinstance(result, CycleReport)
                        outcome = ("moved aside at open" if recovered else "usable") if ok else "x"
            except Exception as exc:  # noqa: BLE001 - a crash is what this counts
                outcome = f"crashed: {type(exc).__name__}"
            if outcome != "moved aside while running":
                break
            if attempt == 1:
                loops += 1
        if outcome.startswith("crashed") or outcome == "x":
            loops += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    said = ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items()))
    report(
        f"random bytes overwritten in {files} state files",
        held=loops == 0,
        figures=f"{said}; crash loops {loops}",
    )


def regex() -> None:
    matcher = Matcher.parse('erid=~"(a+)+$"')
    started = time.perf_counter()
    matcher.matches({"erid": ("a" * 40 + "!",)})
    took = (time.perf_counter() - started) * 1000
    report(
        'backtracking matcher erid=~"(a+)+$" on a 41-character ERID',
        held=took < 50,
        figures=f"{took:.2f} ms (RE2; Python's re: 16 s at 29 characters)",
    )


async def disk_full(sim: Simulator, http: httpx.AsyncClient, tmp: Path) -> None:
    if os.geteuid() != 0:
        report("disk full after Slack accepted", held=True, figures="skipped (needs root)")
        return
    mount = tmp / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        async with running_slack(SlackServer(min_interval=None)) as slack:
            store = open_state(mount / "state.db", now=sim.now())
            bot = SlackBotNotifier("slack", slack.token, "alerts", base_url=slack.api_url)
            errors: list[Any] = []
            sender = OutboxSender(
                store, {"slack": Receiver(bot)}, clock=sim.now, on_state_error=errors.append
            )
            alerting = Alerting(
                teams=(TEAM,), route=Route(receiver="slack", group_wait=timedelta(0))
            )
            source = DigitalRiverSource(client(sim, http))
            await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting)
            task = sim.add_task(status="PROCESSING")
            sim.advance_clock(timedelta(minutes=1))
            await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting)
            sim.set_status(task.task_id, "FAILED")
            sim.advance_clock(timedelta(minutes=1))
            await poll_or_report(source, store, PollSettings(), sim.now, alerting=alerting)
            store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = mount / "filler"
            with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
                while True:
                    out.write(b"\0" * 65536)
            for _ in range(20):
                await sender.deliver_due()
                sim.advance_clock(timedelta(seconds=1))
            sent_while_full = len(slack.messages)
            filler.unlink()
            await sender.deliver_due()
            recorded = sender.unrecorded == 0
            store.close()
        report(
            "disk full between Slack's answer and its record (20 rounds)",
            held=sent_while_full == 1 and recorded and bool(errors),
            figures=f"{sent_while_full} message sent (0 repeats), the state failure reported "
            f"{len(errors)}x, recorded once space came back",
        )
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


# --- the real daemon ----------------------------------------------------------------------------


def daemon_config(tmp: Path, sim: Simulator, slack: SlackServer, health: int) -> Path:
    (tmp / "teams").mkdir(parents=True, exist_ok=True)
    (tmp / "teams" / "catalog.yaml").write_text(
        "team: catalog\nrules:\n  - {name: failed, type: failed}\n"
    )
    config = tmp / "daemon.yaml"
    config.write_text(
        f"""\
state: {{path: {tmp / "daemon.db"}}}
sources:
  dr: {{base_url: {sim.base_url}, interval: 1s, overlap: 30s, initial_lookback: 10m}}
teams: ["teams/*.yaml"]
receivers:
  slack: {{slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0s}}}}
  ops: {{console: true}}
route: {{receiver: slack, group_by: [team, rule, kind], group_wait: 0s, group_interval: 1s}}
notifications: {{fallback_receiver: [ops, slack]}}
health: {{unreachable_after: 5s}}
daemon: {{health_bind: "127.0.0.1:{health}", deliver_interval: 0.2s, shutdown_grace: 5s}}
"""
    )
    return config


async def start_daemon(
    config: Path, slack: SlackServer, **extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "taskwarden", "--log-format=json", "run", "-c", str(config),
        env=env(TASKWARDEN_SOURCES__DR__API_KEY=KEY,
                TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN=slack.token, **extra),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def until(check: Callable[[], Awaitable[bool]], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def healthy(health: int) -> bool:
    async with httpx.AsyncClient(timeout=1) as http:
        try:
            return (await http.get(f"http://127.0.0.1:{health}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def kill_soak(tmp: Path, *, rounds: int) -> None:
    """Failures keep coming while the daemon is SIGKILLed at random moments and
    restarted: every failure told, at most one duplicate per kill."""
    sim = Simulator(api_key=KEY, seed=11)
    rng = random.Random(20261127)
    async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
        health = free_port()
        config = daemon_config(tmp, sim, slack, health)
        failed_at: dict[str, float] = {}
        kills = 0
        proc = await start_daemon(config, slack)
        await until(lambda: healthy(health), 30)
        await asyncio.sleep(1.5)  # the baseline poll
        for _ in range(rounds):
            for _ in range(rng.randint(1, 3)):
                task = sim.add_task(status="PROCESSING", request_type=rng.choice(("A", "B", "C")))
                sim.set_status(task.task_id, "FAILED")
                failed_at[task.task_id] = time.monotonic()
            await asyncio.sleep(rng.uniform(0.2, 2.5))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
            proc = await start_daemon(config, slack)
            await until(lambda: healthy(health), 30)
        settled = await until(lambda: _all_told(slack, failed_at), within=60)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
    counts = {t: sum(t in m.raw for m in slack.messages) for t in failed_at}
    lost = sum(1 for c in counts.values() if c == 0)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    delays = [
        min(m.at for m in slack.messages if t in m.raw) - at
        for t, at in failed_at.items()
        if counts[t]
    ]
    p50 = statistics.median(delays) if delays else float("nan")
    report(
        f"SIGKILL soak: {kills} kills of the daemon while {len(failed_at)} tasks fail",
        held=settled and lost == 0 and duplicates <= kills,
        figures=f"lost {lost}, duplicates {duplicates} ({duplicates / kills:.2f} per kill), "
        f"time to alert p50 {p50:.1f} s (restarts included)",
    )


async def replica_soak(tmp: Path, *, rounds: int) -> None:
    """Three replicas on one PostgreSQL while tasks keep failing: a random replica is
    SIGKILLed (and restarted) each round, and PostgreSQL itself every fifth round; every
    failure told, at most one duplicate per kill."""
    sim = Simulator(api_key=KEY, seed=13)
    rng = random.Random(20261128)
    pg = PgServer().start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        url = pg.new_database()
        open_postgres(url, apply_migrations=True).close()
        async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
            config = daemon_config(tmp, sim, slack, 0).read_text()
            config = config.replace(
                f"state: {{path: {tmp / 'daemon.db'}}}", f'state: {{url: "{url}", lease_ttl: 3s}}'
            )
            (tmp / "replica.yaml").write_text(config.replace('health_bind: "127.0.0.1:0", ', ""))

            async def start() -> asyncio.subprocess.Process:
                health = free_port()
                proc = await start_daemon(
                    tmp / "replica.yaml",
                    slack,
                    TASKWARDEN_DAEMON__HEALTH_BIND=f"127.0.0.1:{health}",
                )
                await until(lambda: healthy(health), 30)
                return proc

            procs = [await start() for _ in range(3)]
            await asyncio.sleep(3)  # the baseline poll, the leases spread
            failed_at: dict[str, float] = {}
            kills = db_kills = 0
            for round_no in range(1, rounds + 1):
                for _ in range(rng.randint(1, 3)):
                    task = sim.add_task(status="PROCESSING", request_type=rng.choice(("A", "B")))
                    sim.set_status(task.task_id, "FAILED")
                    failed_at[task.task_id] = time.monotonic()
                await asyncio.sleep(rng.uniform(0.2, 2.5))
                if round_no % 5 == 0:
                    pg.kill()
                    db_kills += 1
                    await asyncio.sleep(rng.uniform(0.5, 3.0))
                    pg.resume()
                else:
                    victim = procs.pop(rng.randrange(len(procs)))
                    victim.send_signal(signal.SIGKILL)
                    await victim.wait()
                    kills += 1
                    procs.append(await start())
            settled = await until(lambda: _all_told(slack, failed_at), within=90)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        pg.close()
    counts = {t: sum(t in m.raw for m in slack.messages) for t in failed_at}
    lost = sum(1 for c in counts.values() if c == 0)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    report(
        f"PostgreSQL, 3 replicas: {kills} replica kills and {db_kills} database kills while "
        f"{len(failed_at)} tasks fail",
        held=settled and lost == 0 and duplicates <= kills + db_kills,
        figures=f"lost {lost}, duplicates {duplicates}",
    )


async def _all_told(slack: SlackServer, failed: dict[str, float]) -> bool:
    text = "\n".join(m.raw for m in slack.messages)
    return all(t in text for t in failed)


async def idle_connections(tmp: Path) -> None:
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
        health = free_port()
        proc = await start_daemon(daemon_config(tmp, sim, slack, health), slack)
        writers: list[asyncio.StreamWriter] = []
        try:
            await until(lambda: healthy(health), 30)
            for _ in range(1_100):
                _, writer = await asyncio.open_connection("127.0.0.1", health)
                writers.append(writer)
            await asyncio.sleep(0.2)
            fds = sum(1 for _ in Path(f"/proc/{proc.pid}/fd").iterdir())
            probe = await healthy(health)
            sim.add_task(status="FAILED")
            delivered = await until(lambda: _has_messages(slack), 20)
        finally:
            for writer in writers:
                writer.close()
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    report(
        "1,100 idle connections to the health port",
        held=fds < 150 and probe and delivered,
        figures=f"{fds} open descriptors, /healthz answered, Slack delivery went on",
    )


async def _has_messages(slack: SlackServer) -> bool:
    return bool(slack.messages)


async def api_down(tmp: Path) -> None:
    """How long an outage takes to be told, against health.unreachable_after (5 s)."""
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
        health = free_port()
        proc = await start_daemon(daemon_config(tmp, sim, slack, health), slack)
        try:
            await until(lambda: healthy(health), 30)
            await asyncio.sleep(1.5)
            sim.inject(Fault("server_error", remaining=1_000_000, status=503))
            started = time.monotonic()
            told = await until(lambda: _health_alert(slack), 60)
            took = time.monotonic() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            await proc.wait()
    report(
        "vendor API down (unreachable_after 5 s, retries 5 in 60 s)",
        held=told and took < 5 + 60 + 5,
        figures=f"source-health alert after {took:.1f} s",
    )


async def _health_alert(slack: SlackServer) -> bool:
    return any("polling has failed" in m.text for m in slack.messages)


# --- main ---------------------------------------------------------------------------------------


async def main(smoke: bool) -> int:
    configure_logging(json_output=True, level="critical")
    # Quiet: the attacks provoke critical lines by design (a corrupt file moved aside).
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim = Simulator(api_key=KEY)
        sim.freeze_clock(T0)
        async with running_simulator(sim), httpx.AsyncClient() as http:
            await vendor_attacks(sim, http, tmp)
            regex()
            await corruption(sim, http, tmp, files=4 if smoke else 15)
            await slack_outage(http, tmp)
            if not smoke:
                await disk_full(sim, http, tmp)
            sim.unfreeze_clock()
            await endless_cursors(sim, tmp, pages=100 if smoke else None)
        if not smoke:
            await idle_connections(tmp / "idle")
            await api_down(tmp / "down")
        await kill_soak(tmp / "soak", rounds=4 if smoke else 30)
        (tmp / "replicas").mkdir()
        await replica_soak(tmp / "replicas", rounds=5 if smoke else 30)
    print()
    print(
        f"taskwarden chaos — {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}" + (" (smoke)" if smoke else "")
    )
    print()
    print("| attack | held | figures |")
    print("| --- | --- | --- |")
    for row in ROWS:
        print(f"| {row.attack} | {'held' if row.held else '**BROKE**'} | {row.figures} |")
    return 0 if all(r.held for r in ROWS) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the quick subset make test runs")
    sys.exit(asyncio.run(main(parser.parse_args().smoke)))
