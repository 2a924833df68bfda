"""API calls and time of one poll cycle, by window size.

Prints a table; it is a measurement, not a test. Each size runs against the in-process
simulator on loopback with a frozen clock, so the figures depend only on the code:

* baseline: first start, the initial lookback covers the whole 30-day window once;
* idle: nothing changed since the last cycle;
* busy: 1,000 changes (950 new tasks, 50 status changes of open tasks) since the last cycle.

The window holds 50 open tasks at any size: open tasks do not grow with history. With
``--backend postgresql`` (or ``both``) the same cycles run against a real PostgreSQL on
loopback (Debian's binaries, a throw-away cluster); "db CPU" is then the CPU of the
server process serving the connection, which the process's own CPU does not include.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.pgserver

from tests.pgserver import PgServer

from taskwarden.logs import configure_logging
from taskwarden.poller import PollSettings, poll_once
from taskwarden.simulator import Simulator, running_simulator
from taskwarden.sources.digitalriver import DigitalRiverClient, DigitalRiverSource, make_auth
from taskwarden.state import SqliteStateStore, open_state
from taskwarden.state.postgres import PostgresStateStore, open_postgres
from taskwarden.timeutil import parse_api_time

OPEN_TASKS = 50
SETTINGS = PollSettings(
    overlap=timedelta(minutes=5), initial_lookback=timedelta(days=30), retention=timedelta(days=30)
)


def server_cpu_ms(store: object) -> float:
    """CPU of the PostgreSQL backend serving ``store`` (0 for SQLite: in-process)."""
    if not isinstance(store, PostgresStateStore):
        return 0.0
    pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def database_size(store: PostgresStateStore) -> int:
    return int(store.db.execute("SELECT pg_database_size(current_database())").fetchone()[0])


async def measure(
    size: int, pg: PgServer | None
) -> list[tuple[str, int, int, float, float, float, int]]:
    sim = Simulator(api_key="bench")
    sim.freeze_clock(parse_api_time("2026-03-01T12:00:00Z"))
    now = sim.now()
    sim.generate(size - OPEN_TASKS, begin=now - timedelta(days=29), end=now - timedelta(hours=1))
    open_tasks = [
        sim.add_task(status="PROCESSING", received=now - timedelta(days=28, minutes=i))
        for i in range(OPEN_TASKS)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store: SqliteStateStore | PostgresStateStore = (
            open_state(Path(tmp) / "state.db", now=now)
            if pg is None
            else open_postgres(pg.new_database(), apply_migrations=True)
        )
        async with running_simulator(sim), httpx.AsyncClient(timeout=30) as http:
            client = DigitalRiverClient(
                http, base_url=sim.base_url, auth=make_auth("basic", "bench")
            )
            source = DigitalRiverSource(client)

            async def timed(label: str) -> None:
                sim.advance_clock(timedelta(minutes=1))
                db0 = server_cpu_ms(store)
                cpu0, wall0 = time.process_time(), time.perf_counter()
                report = await poll_once(source, store, SETTINGS, sim.now())
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                db = server_cpu_ms(store) - db0
                rows.append(
                    (label, report.api_calls, report.changes, wall * 1000, cpu * 1000, db, 0)
                )

            await timed("baseline")
            await timed("idle")
            await timed("idle")
            for i in range(950):
                sim.add_task(
                    status="FAILED" if i % 10 == 0 else "COMPLETED",
                    received=sim.now() - timedelta(seconds=30 - i * 0.01),
                )
            for task in open_tasks:
                sim.set_status(task.task_id, "COMPLETED")
            await timed("busy")
        if isinstance(store, PostgresStateStore):
            state_size = database_size(store)
            store.close()
        else:
            store.close()  # checkpoints the WAL into the file
            state_size = file_size(Path(tmp) / "state.db")
    return [
        (label, calls, changes, wall, cpu, db, state_size)
        for label, calls, changes, wall, cpu, db, _ in rows
    ]


def file_size(path: Path) -> int:
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000", help="comma-separated window sizes")
    parser.add_argument(
        "--backend", choices=("sqlite", "postgresql", "both"), default="sqlite",
        help="the state store(s) to measure",
    )  # fmt: skip
    args = parser.parse_args()
    configure_logging(json_output=True, level="warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    pg = PgServer().start() if "postgresql" in backends else None
    header = (
        "backend",
        "tasks",
        "cycle",
        "API calls",
        "changes",
        "wall ms",
        "CPU ms",
        "db CPU ms",
        "state MB",
    )
    print("{:<10} {:>8} {:<9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>9}".format(*header))
    try:
        for size in sizes:
            for backend in backends:
                server = pg if backend == "postgresql" else None
                for label, calls, changes, wall, cpu, db, state in asyncio.run(
                    measure(size, server)
                ):
                    # CPU figures include the in-process simulator serving the same requests.
                    mb = state / 1e6
                    print(
                        f"{backend:<10} {size:>8} {label:<9} {calls:>9} {changes:>8} {wall:>9.1f} "
                        f"{cpu:>8.1f} {db:>9.1f} {mb:>9.2f}"
                    )
    finally:
        if pg is not None:
            pg.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the benchmark process (daemon + simulator): {peak:.0f} MB")


if __name__ == "__main__":
    main()
