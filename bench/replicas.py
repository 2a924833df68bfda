"""SQLite against PostgreSQL, failover and scale-out: the figures of the HA issue.

1. cycle cost (the daemon process, the same scenario as compare.py): baseline, idle,
   typical and busy cycles at each size, on SQLite and on PostgreSQL, in one run; for
   PostgreSQL also the CPU of the server processes over the same cycle;
2. failover: three replicas, the holder of the source SIGKILLed ``--kills`` times; the time
   from the kill to the first cycle committed by the new holder (p50 / p99);
3. scale-out: ``--sources`` sources (half Digital River, half Elastic Path) polled every
   60 s, on one replica and on three: CPU per replica and poll lateness (the gap between
   two polls of a source beyond its interval).

Run: ``python bench/replicas.py`` (about 20 minutes; ``--smoke`` for a quick pass).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "daemon"))
sys.path.insert(0, str(HERE.parent))  # tests.pgserver

from tests.pgserver import PgServer  # noqa: E402

from compare import (  # noqa: E402 - after sys.path (bench/compare.py)
    IDLE_CYCLES,
    KEY,
    OPEN_TASKS,
    DaemonProcess,
    busy_changes,
    cpu_seconds,
    typical_changes,
    write_config,
)
from taskwarden.logs import configure_logging  # noqa: E402
from taskwarden.simulator import Simulator, running_simulator  # noqa: E402
from taskwarden.simulator.elasticpath import install_elasticpath  # noqa: E402
from taskwarden.simulator.slack import SlackServer, running_slack  # noqa: E402
from taskwarden.state.postgres import open_postgres  # noqa: E402

EP_SECRET = "bench-ep-secret"
LEASE_TTL = 5.0


def server_cpu(pg: PgServer) -> float:
    """CPU seconds of every process of the cluster (postmaster and its children)."""
    pid = int((pg.data / "postmaster.pid").read_text().splitlines()[0])
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0.0
    for member in [pid, *map(int, children)]:
        try:
            total += cpu_seconds(member)
        except FileNotFoundError:
            continue  # a backend that ended meanwhile
    return total


def on_postgres(config: Path, url: str, **state: str) -> Path:
    text = config.read_text()
    first, rest = text.split("\n", 1)
    assert first.startswith("state:")
    extra = "".join(f", {k}: {v}" for k, v in state.items())
    config.write_text(f'state: {{url: "{url}"{extra}}}\n{rest}')
    return config


# --- 1. cycle cost ------------------------------------------------------------------------------


async def cycle_cost(size: int, backend: str, pg: PgServer) -> dict[str, Any]:
    sim = Simulator(api_key=KEY)
    now = sim.now()
    sim.generate(size, begin=now - timedelta(days=29), end=now - timedelta(minutes=10))
    open_ids = [
        sim.add_task(status="PROCESSING", received=now - timedelta(minutes=9)).task_id
        for _ in range(OPEN_TASKS)
    ]
    row: dict[str, Any] = {"size": size, "backend": backend}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
            config = write_config(tmp, sim, slack, min_interval="0s")
            if backend == "postgresql":
                url = pg.new_database()
                open_postgres(url, apply_migrations=True).close()
                on_postgres(config, url)
            daemon = await DaemonProcess.start(config)
            try:

                async def measured(label: str) -> None:
                    db0 = server_cpu(pg) if backend == "postgresql" else 0.0
                    cycle = await daemon.next_cycle()
                    # a backend that exits takes its CPU out of the sum: never below 0
                    db = max(0.0, server_cpu(pg) - db0) if backend == "postgresql" else 0.0
                    row[label] = (cycle.event["seconds"] * 1000, cycle.cpu * 1000, db * 1000)

                await measured("baseline")
                await daemon.next_cycle()
                await daemon.drain_pending_cycles()
                db0 = server_cpu(pg) if backend == "postgresql" else 0.0
                idles = [await daemon.next_cycle() for _ in range(IDLE_CYCLES)]
                db = (
                    max(0.0, server_cpu(pg) - db0) / IDLE_CYCLES if backend == "postgresql" else 0.0
                )
                row["idle"] = (
                    statistics.mean(c.event["seconds"] for c in idles) * 1000,
                    statistics.mean(c.cpu for c in idles) * 1000,
                    db * 1000,
                )
                for kind, change in (("typical", typical_changes), ("busy", busy_changes)):
                    await daemon.drain_pending_cycles()
                    change(sim, open_ids)
                    await measured(kind)
            finally:
                await daemon.stop()
    return row


# --- 2. failover --------------------------------------------------------------------------------


def replica_config(tmp: Path, sim: Simulator, slack: SlackServer, url: str, sources: int) -> Path:
    (tmp / "teams").mkdir(parents=True, exist_ok=True)
    (tmp / "teams" / "catalog.yaml").write_text(
        "team: catalog\nrules:\n  - {name: failed, type: failed}\n"
    )
    interval = "1s" if sources == 1 else "60s"
    lines = []
    for i in range(sources):
        if sources == 1 or i % 2 == 0:
            lines.append(
                f"  dr_{i}: {{base_url: {sim.base_url}, interval: {interval}, "
                "initial_lookback: 10m, overlap: 1m}"
            )
        else:
            lines.append(
                f"  ep_{i}: {{kind: elasticpath, base_url: {sim.base_url}, client_id: bench, "
                f"interval: {interval}, initial_lookback: 10m, overlap: 1m}}"
            )
    sources_yaml = "\n".join(lines)
    config = tmp / "replica.yaml"
    config.write_text(
        f"""\
state: {{url: "{url}", lease_ttl: {LEASE_TTL:g}s}}
sources:
{sources_yaml}
teams: ["teams/*.yaml"]
receivers:
  slack: {{slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0s}}}}
route: {{receiver: slack, group_wait: 0s, group_interval: 1s}}
daemon: {{deliver_interval: 0.5s, jitter: 0, health_bind: "127.0.0.1:0"}}
"""
    )
    return config


async def start_replica(config: Path, log: Path, sources: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWARDEN_")}
    env.update(
        PYTHONPATH=str(HERE.parent / "daemon"),
        TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN="xoxb-test-token",
    )
    for i in range(sources):
        if sources == 1 or i % 2 == 0:
            env[f"TASKWARDEN_SOURCES__DR_{i}__API_KEY"] = KEY
        else:
            env[f"TASKWARDEN_SOURCES__EP_{i}__CLIENT_SECRET"] = EP_SECRET
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "taskwarden", "--log-format=json", "run", "-c", str(config),
            env=env, stdout=out, stderr=out,
        )  # fmt: skip


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql.encode(), params).fetchall()


async def wait_for(check: Any, within: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return False


async def failover(pg: PgServer, kills: int) -> dict[str, Any]:
    url = pg.new_database()
    open_postgres(url, apply_migrations=True).close()
    sim = Simulator(api_key=KEY)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
            config = replica_config(tmp, sim, slack, url, 1)
            procs = [await start_replica(config, tmp / f"r{i}.log", 1) for i in range(3)]

            def holder_pid() -> int | None:
                rows = query(url, "SELECT owner FROM leases WHERE name = 'source:dr_0'")
                owner = rows[0][0] if rows else None
                return int(owner.split(":")[1]) if owner else None

            def last_success_ms() -> int:
                rows = query(url, "SELECT last_success_ms FROM sources WHERE source = 'dr_0'")
                return int(rows[0][0] or 0) if rows else 0

            try:
                await wait_for(lambda: last_success_ms() > 0, 60)
                await asyncio.sleep(3 * LEASE_TTL)  # the leases spread
                for n in range(kills):
                    pid = holder_pid()
                    victim = next(p for p in procs if p.pid == pid)
                    victim.send_signal(signal.SIGKILL)
                    killed = time.time()
                    await victim.wait()
                    if await wait_for(
                        lambda k=killed: last_success_ms() > k * 1000, 10 * LEASE_TTL
                    ):
                        times.append(last_success_ms() / 1000 - killed)
                    procs.remove(victim)
                    procs.append(await start_replica(config, tmp / f"restart{n}.log", 1))
                    await asyncio.sleep(LEASE_TTL)  # the newcomer takes its share
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
    ordered = sorted(times)
    return {
        "kills": kills,
        "measured": len(times),
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        if ordered
        else float("nan"),
        "max": max(ordered) if ordered else float("nan"),
    }


# --- 3. scale-out -------------------------------------------------------------------------------


def poll_gaps(logs: list[Path]) -> list[float]:
    """Per source, the gaps between consecutive completed polls, in seconds."""
    seen: dict[str, list[float]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "poll.completed":
                at = datetime.fromisoformat(event["timestamp"])
                seen.setdefault(event["source"], []).append(at.timestamp())
    gaps = []
    for stamps in seen.values():
        stamps.sort()
        gaps += [b - a for a, b in itertools.pairwise(stamps)]
    return gaps


async def scale_out(pg: PgServer, sources: int, replicas: int, window: float) -> dict[str, Any]:
    url = pg.new_database()
    open_postgres(url, apply_migrations=True).close()
    sim = Simulator(api_key=KEY)
    install_elasticpath(sim, client_id="bench", client_secret=EP_SECRET)
    sim.generate(500, begin=sim.now() - timedelta(minutes=9), end=sim.now())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        async with running_simulator(sim), running_slack(SlackServer(min_interval=None)) as slack:
            config = replica_config(tmp, sim, slack, url, sources)
            logs = [tmp / f"r{i}.log" for i in range(replicas)]
            procs = [await start_replica(config, log, sources) for log in logs]
            try:
                await asyncio.sleep(70)  # the first polls, the leases spread
                for log in logs:
                    log.write_text("")  # measure the steady state only
                cpu0 = [cpu_seconds(p.pid) for p in procs]
                await asyncio.sleep(window)
                cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu0, strict=True)]
                spread = query(
                    url,
                    "SELECT owner, COUNT(*) FROM leases WHERE name LIKE 'source:%%' GROUP BY owner",
                )
            finally:
                for proc in procs:
                    proc.send_signal(signal.SIGTERM)
                    await proc.wait()
            gaps = poll_gaps(logs)
    lateness = sorted(max(g - 60, 0.0) for g in gaps)
    return {
        "replicas": replicas,
        "cpu_per_replica_pct": [c / window * 100 for c in cpu],
        "sources_per_replica": sorted(int(r[1]) for r in spread),
        "late_p50": statistics.median(lateness) if lateness else float("nan"),
        "late_p99": lateness[int(len(lateness) * 0.99)] if lateness else float("nan"),
        "gaps": len(gaps),
    }


# --- report ------------------------------------------------------------------------------------


def print_report(
    costs: list[dict[str, Any]],
    fail: dict[str, Any] | None,
    scale: list[dict[str, Any]],
    *,
    header: bool = True,
) -> None:
    if header:
        print(
            f"taskwarden on SQLite and PostgreSQL — {datetime.now(tz=UTC):%Y-%m-%d}, "
            f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        )
    if costs:
        print()
        print("1. cost per cycle (daemon process; db = PostgreSQL server processes, same cycle)")
        print(
            "| tasks | cycle | SQLite wall ms | SQLite CPU ms | PostgreSQL wall ms | PostgreSQL CPU ms | db CPU ms |"
        )
        print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        by = {(r["size"], r["backend"]): r for r in costs}
        for size in sorted({r["size"] for r in costs}):
            lite, pg = by.get((size, "sqlite")), by.get((size, "postgresql"))
            for kind in ("baseline", "idle", "typical", "busy"):
                a = lite[kind] if lite else (float("nan"),) * 3
                b = pg[kind] if pg else (float("nan"),) * 3
                print(
                    f"| {size:,} | {kind} | {a[0]:.0f} | {a[1]:.0f} | {b[0]:.0f} | {b[1]:.0f} | "
                    f"{b[2]:.0f} |"
                )
    if fail:
        print()
        print(
            f"2. failover (3 replicas, lease_ttl {LEASE_TTL:g} s, interval 1 s): kill of the "
            f"holder → first cycle committed by the new holder over {fail['measured']} of "
            f"{fail['kills']} kills: p50 {fail['p50']:.1f} s, p99 {fail['p99']:.1f} s, "
            f"max {fail['max']:.1f} s (bound: 2 × TTL = {2 * LEASE_TTL:g} s)"
        )
    if scale:
        print()
        print("3. scale-out: sources polled every 60 s (half Digital River, half Elastic Path)")
        for row in scale:
            cpu = ", ".join(f"{c:.1f} %" for c in row["cpu_per_replica_pct"])
            print(
                f"   {row['replicas']} replica(s): CPU per replica {cpu}; sources per replica "
                f"{row['sources_per_replica']}; poll lateness p50 {row['late_p50']:.2f} s, "
                f"p99 {row['late_p99']:.2f} s over {row['gaps']} intervals"
            )


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000])
    parser.add_argument("--kills", type=int, default=20, help="0 skips the failover run")
    parser.add_argument("--sources", type=int, default=200, help="0 skips the scale-out run")
    parser.add_argument("--window", type=float, default=130.0, help="scale-out seconds measured")
    parser.add_argument("--smoke", action="store_true", help="1k tasks, 2 kills, no scale-out")
    args = parser.parse_args()
    if args.smoke:
        args.sizes, args.kills, args.sources = [1000], 2, 0
    configure_logging(json_output=True, level="warning")
    pg = PgServer().start()
    try:
        # Each section prints as soon as it is measured: a later one failing loses nothing.
        costs = [
            await cycle_cost(size, backend, pg)
            for size in args.sizes
            for backend in ("sqlite", "postgresql")
        ]
        print_report(costs, None, [])
        fail = await failover(pg, args.kills) if args.kills else None
        print_report([], fail, [], header=False)
        scale = (
            [await scale_out(pg, args.sources, n, args.window) for n in (1, 3)]
            if args.sources
            else []
        )
        print_report([], None, scale, header=False)
    finally:
        pg.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
