"""What the status page costs the daemon, by state size.

Prints a table; it is a measurement, not a test. The page is gathered from the state on
the daemon's event loop (the store is synchronous), so its cost is time the loop does not
poll or deliver. Each size is a SQLite state with that many tasks, 50 of them still open
(as in poll_cycle.py: open tasks do not grow with history; ``--open`` changes it), and 200
alerts; the figure is the median of several loads of `gather` + the HTML (and of the JSON
for ``/api/v1/status``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "daemon"))

from taskwarden.alerts import Alert, Severity
from taskwarden.diff import diff
from taskwarden.model import Phase, Task
from taskwarden.routing import AlertBatch, Destination, RoutedAlert, Timing
from taskwarden.service.status import gather, status_html, status_json
from taskwarden.state import CycleCommit, SqliteStateStore, open_state

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CHUNK = 10_000
ALERTS = 200


def build(path: Path, tasks: int, open_tasks: int) -> SqliteStateStore:
    store = open_state(path, now=T0)
    for start in range(0, tasks, CHUNK):
        batch = []
        for i in range(start, min(start + CHUNK, tasks)):
            running = i % max(tasks // open_tasks, 1) == 0 if open_tasks else False
            batch.append(
                Task(
                    "dr",
                    f"t{i:07d}",
                    "PROCESSING" if running else "COMPLETED",
                    Phase.RUNNING if running else Phase.SUCCEEDED,
                    "DEPLOY_PRODUCT",
                    T0 + timedelta(seconds=i),
                )
            )
        now = T0 + timedelta(seconds=start + CHUNK)
        events = diff(store.tracked("dr", [t.task_id for t in batch]), batch, now)
        store.commit_cycle(
            "dr", CycleCommit(checkpoint=now, events=events, now=now, baseline=False)
        )
    timing = Timing(group_wait=timedelta(hours=1))
    where = Destination("chat", "chat|catalog", (("team", "catalog"),), timing)
    fired = tuple(
        RoutedAlert(
            Alert(
                f"k{i}",
                "stuck",
                "dr",
                Severity.WARNING,
                (("team", "catalog"),),
                f"alert {i}",
                one_shot=False,
                starts_at=T0,
            ),
            (where,),
        )
        for i in range(ALERTS)
    )
    store.apply_alerts(AlertBatch(fired=fired), T0)
    return store


def measure(store: SqliteStateStore, loads: int) -> tuple[float, float, int]:
    now = T0 + timedelta(days=1)
    html_ms, json_ms, size = [], [], 0
    for _ in range(loads):
        start = time.perf_counter()
        page = status_html(gather(store, {"dr": "ok"}, now))
        html_ms.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        json.dumps(status_json(gather(store, {"dr": "ok"}, now)))
        json_ms.append((time.perf_counter() - start) * 1000)
        size = len(page)
    return statistics.median(html_ms), statistics.median(json_ms), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--open", type=int, default=50, help="Open tasks in each state.")
    args = parser.parse_args()
    print("| tasks | open | page (ms) | /api/v1/status (ms) | page size |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            store = build(Path(tmp) / "state.db", size, args.open)
            try:
                page_ms, json_ms, page_size = measure(store, args.loads)
                opened = sum(len(s.open_tasks) for s in store.summary().sources)
            finally:
                store.close()
        print(f"| {size:,} | {opened:,} | {page_ms:.0f} | {json_ms:.0f} | {page_size // 1000} kB |")


if __name__ == "__main__":
    main()
