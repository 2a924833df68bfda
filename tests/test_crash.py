"""SIGKILL the poller at random points; every transition must be recorded exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import signal
import sqlite3
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.simulator import Simulator, running_simulator
from taskwarden.simulator.faults import Fault

from .helpers import TASKWARDEN, subprocess_env

if TYPE_CHECKING:
    from pathlib import Path

API_KEY = "crash-test-key-123"
NEXT_STATUS = {"PUBLISHED": ["PROCESSING"], "PROCESSING": ["COMPLETED", "FAILED", "FAILED"]}


def write_config(tmp_path: Path, base_url: str) -> Path:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"""
state:
  path: {tmp_path / "state.db"}
sources:
  dr:
    base_url: {base_url}
    overlap: 1m
    initial_lookback: 2h
    retry_attempts: 3
    retry_total: 5s
"""
    )
    return config


async def run_once(config: Path, *, kill_after: float | None) -> tuple[int | None, float]:
    """Exit code (None when killed) and wall time of one ``taskwarden once``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN,
        "--log-format=json",
        "once",
        "-c",
        str(config),
        env=subprocess_env(TASKWARDEN_SOURCES__DR__API_KEY=API_KEY),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    if kill_after is not None:
        try:
            code = await asyncio.wait_for(proc.wait(), timeout=kill_after)
        except TimeoutError:
            # The run may have ended in the very tick the timeout fired: then there is
            # nobody left to kill (send_signal would raise), and the run counts as finished.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            code = await proc.wait()
            killed = code == -signal.SIGKILL
            return (None if killed else code), loop.time() - started
        return code, loop.time() - started
    code = await asyncio.wait_for(proc.wait(), timeout=60)
    return code, loop.time() - started


@pytest.mark.slow
async def test_sigkill_at_random_points_records_each_transition_once(tmp_path: Path) -> None:
    rng = random.Random(20261123)
    sim = Simulator(api_key=API_KEY, seed=7)
    async with running_simulator(sim) as running:
        config = write_config(tmp_path, running.base_url)
        for minutes in range(40, 0, -1):
            sim.add_task(received=sim.now() - timedelta(minutes=minutes))
        # Calibrate: kills aim at the second half of a run, where the scan and commit are
        # (the first half is interpreter start-up, where a kill proves little).
        code, duration = await run_once(config, kill_after=None)
        assert code == 0
        kills = 0
        for _ in range(40):
            movable = [t for t in sim.tasks.by_id.values() if t.status in NEXT_STATUS]
            for task in rng.sample(movable, min(6, len(movable))):
                sim.set_status(task.task_id, rng.choice(NEXT_STATUS[task.status]))
            for _ in range(2):
                sim.add_task()
            sim.inject(Fault("slow", remaining=3, delay=0.08))
            kill_after = rng.uniform(0.5, 1.05) * duration if rng.random() < 0.8 else None
            code, elapsed = await run_once(config, kill_after=kill_after)
            if code is None:
                kills += 1
            else:
                assert code == 0
                duration = (duration + elapsed) / 2
        sim.faults.clear()
        assert (await run_once(config, kill_after=None))[0] == 0
        assert (await run_once(config, kill_after=None))[0] == 0

    assert kills >= 20
    with sqlite3.connect(tmp_path / "state.db") as conn:
        journal = conn.execute(
            "SELECT task_id, old_status, new_status FROM journal ORDER BY id"
        ).fetchall()
    history: dict[str, list[tuple[str | None, str]]] = defaultdict(list)
    for task_id, old, new in journal:
        history[task_id].append((old, new))
    simulated: dict[str, list[str]] = defaultdict(list)
    for transition in sim.tasks.transitions:
        simulated[transition.task_id].append(transition.new)

    assert set(history) == set(sim.tasks.by_id)
    for task_id, task in sim.tasks.by_id.items():
        steps = history[task_id]
        assert steps[0][0] is None, f"{task_id}: first record is not its appearance: {steps}"
        for (_, before), (after_old, _) in itertools.pairwise(steps):
            assert after_old == before, f"{task_id}: broken or repeated chain {steps}"
        assert steps[-1][1] == task.status, (
            f"{task_id}: ends {steps[-1][1]}, simulator {task.status}"
        )
        # Everything recorded happened, in order (polls may skip a quick intermediate status).
        path = ["PUBLISHED", *simulated[task_id]]
        recorded = [new for _, new in steps]
        positions = [path.index(status) for status in recorded]
        assert positions == sorted(set(positions)), f"{task_id}: {recorded} vs {path}"
