"""``taskwarden demo``: the real poll cycle against a scripted simulator scenario.

No credentials, no network beyond loopback; ends by itself. Until notifications land it
shows what the poller detects; the alerting demo builds on this script.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

import click
import httpx

from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared
from taskwarden.poller import PollSettings, poll_once
from taskwarden.simulator import Simulator, running_simulator
from taskwarden.sources.digitalriver import DigitalRiverClient, DigitalRiverSource, make_auth
from taskwarden.state import open_state

KEY = "demo-api-key"
SETTINGS = PollSettings(overlap=timedelta(seconds=5), initial_lookback=timedelta(hours=1))


def scenario(sim: Simulator) -> dict[int, list[tuple[str, str]]]:
    """Tasks created up front, and which status each one takes at which cycle."""
    deploy = sim.add_task(request_type="DEPLOY_PRODUCT", status="PUBLISHED")
    retire = sim.add_task(request_type="RETIRE_PRODUCT", status="PUBLISHED")
    update = sim.add_task(request_type="UPDATE_PRODUCT", status="PUBLISHED")
    hang = sim.add_task(request_type="DEPLOY_PRODUCT", status="PROCESSING")
    return {
        2: [(deploy.task_id, "PROCESSING"), (update.task_id, "COMPLETED")],
        3: [(deploy.task_id, "FAILED"), (retire.task_id, "FAILED")],
        6: [(hang.task_id, "COMPLETED")],
    }


async def run_demo(cycles: int = 8, interval: float = 1.0) -> int:
    sim = Simulator(api_key=KEY)
    plan = scenario(sim)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_state(Path(tmp) / "demo.db", now=sim.now())
        try:
            async with running_simulator(sim), httpx.AsyncClient(timeout=5) as http:
                click.echo(f"simulator at {sim.base_url}; polling every {interval:g}s")
                client = DigitalRiverClient(
                    http, base_url=sim.base_url, auth=make_auth("basic", KEY), source_name="demo"
                )
                source = DigitalRiverSource(client)
                calls = 0
                for cycle in range(1, cycles + 1):
                    for task_id, status in plan.get(cycle, []):
                        sim.set_status(task_id, status, deployment_errors=_errors(status))
                    report = await poll_once(source, store, SETTINGS, sim.now())
                    calls += report.api_calls
                    for event in report.events:
                        line = _describe(event)
                        if line:
                            click.echo(f"cycle {cycle}: {line}")
                    await asyncio.sleep(interval)
        finally:
            store.close()
    click.echo(f"done: {cycles} cycles, {calls} API calls. Alerts and notifications: coming next.")
    return 0


def _errors(status: str) -> list[dict[str, str]] | None:
    if status != "FAILED":
        return None
    return [{"errorCode": "PRICE_MISSING", "description": "No price for locale de_DE"}]


def _describe(event: object) -> str | None:
    if isinstance(event, TaskAppeared):
        return f"new {event.task.kind} {event.task.task_id[:8]} is {event.task.status}"
    if isinstance(event, StatusChanged):
        mark = "FAILED  <-- would alert" if event.new == "FAILED" else event.new
        return f"{event.task.kind} {event.task.task_id[:8]}: {event.old} -> {mark}"
    if isinstance(event, StillOpen) and event.task.status == "PROCESSING":
        return f"{event.task.kind} {event.task.task_id[:8]} still PROCESSING"
    return None
