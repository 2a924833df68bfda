"""The bodies of the ``once`` and ``state`` commands (the CLI only parses arguments)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import click
import structlog

from taskwarden.config import load_settings
from taskwarden.errors import SourceError
from taskwarden.poller import poll_once
from taskwarden.state import open_state
from taskwarden.timeutil import format_api_time, utc_now
from taskwarden.wiring import build_sources, open_http, register_settings_secrets

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.state.protocol import StateSummary

log = structlog.get_logger(__name__)


async def run_once(config: Path, *, dry_run: bool) -> int:
    """One cycle of every source. Exit 0 when all succeeded, 1 when any failed."""
    settings = load_settings(config)
    register_settings_secrets(settings)
    store = open_state(settings.state.path, now=utc_now())
    failures = 0
    try:
        async with AsyncExitStack() as stack:
            http = await open_http(stack, settings)
            for configured in build_sources(settings, http):
                try:
                    report = await poll_once(
                        configured.source, store, configured.poll, utc_now(), dry_run=dry_run
                    )
                except SourceError as exc:
                    failures += 1
                    log.exception("poll.failed", source=configured.source.name, error=str(exc))
                    continue
                if dry_run:
                    for event in report.events:
                        task, kind = event.task, type(event).__name__
                        click.echo(f"{report.source}: {kind} {task.task_id} {task.status}")
    finally:
        store.close()
    return 1 if failures else 0


def summary_json(summary: StateSummary, now_text: str) -> dict[str, Any]:
    return {
        "path": summary.path,
        "schemaVersion": summary.schema_version,
        "now": now_text,
        "journalEntries": summary.journal_entries,
        "sources": [
            {
                "source": s.source,
                "checkpoint": format_api_time(s.checkpoint) if s.checkpoint else None,
                "lastSuccess": format_api_time(s.last_success) if s.last_success else None,
                "lastStrategy": s.last_strategy,
                "lastApiCalls": s.last_api_calls,
                "tasksByStatus": s.tasks_by_status,
                "openTasks": [
                    {
                        "taskId": t.task_id,
                        "status": t.status,
                        "kind": t.kind,
                        "receivedTime": format_api_time(t.received_time),
                    }
                    for t in s.open_tasks
                ],
            }
            for s in summary.sources
        ],
        **summary.extras,
    }


def show_state(config: Path, *, as_json: bool) -> int:
    settings = load_settings(config)
    now = utc_now()
    # Read-only inspection must work while the daemon runs: no lock.
    store = open_state(settings.state.path, now=now, lock=False)
    try:
        summary = store.summary()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(summary_json(summary, format_api_time(now)), indent=2))
        return 0
    click.echo(f"state file {summary.path} (schema v{summary.schema_version})")
    if not summary.sources:
        click.echo("no source has been polled yet")
    for s in summary.sources:
        checkpoint = format_api_time(s.checkpoint) if s.checkpoint else "never"
        strategy = s.last_strategy or "-"
        click.echo(
            f"\n[{s.source}] checkpoint {checkpoint}; "
            f"last poll used {s.last_api_calls} API call(s) ({strategy})"
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.tasks_by_status.items())) or "none"
        click.echo(f"  tasks tracked: {counts}")
        for t in s.open_tasks:
            age = now - t.received_time
            click.echo(
                f"  open {t.task_id} {t.status:<10} {t.kind:<28} age {_age(age.total_seconds())}"
            )
    return 0


def _age(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h{minutes:02d}m" if days else f"{hours}h{minutes:02d}m"
