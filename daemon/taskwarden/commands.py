"""The bodies of the ``once`` and ``state`` commands (the CLI only parses arguments)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import click
import structlog

from taskwarden.alerts import Notification
from taskwarden.config import load_settings
from taskwarden.errors import ConfigError, DeliveryError, StateMissingError
from taskwarden.notify.render import plain_text
from taskwarden.outbox import OutboxSender
from taskwarden.poller import PollFailed, poll_or_report
from taskwarden.state import open_state
from taskwarden.timeutil import format_api_time, utc_now
from taskwarden.wiring import (
    build_alerting,
    build_notifiers,
    build_receivers,
    build_sources,
    configured_silences,
    delivery_settings,
    open_http,
    register_settings_secrets,
)

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.poller import CycleReport
    from taskwarden.state.protocol import StateSummary

log = structlog.get_logger(__name__)


async def run_once(config: Path, *, dry_run: bool) -> int:
    """One cycle of every source, then deliver. Exit 0 when all polls succeeded, else 1.

    Meant for cron: nothing runs between two invocations, so groups are flushed at the end
    of the run instead of waiting for ``group_wait``. ``--dry-run`` prints the events and the
    notifications the cycle would send; it sends nothing and changes no state.
    """
    settings = load_settings(config)
    register_settings_secrets(settings)
    alerting = build_alerting(settings, config)
    failures = 0
    async with AsyncExitStack() as stack:
        store = stack.enter_context(open_state(settings.state.path, now=utc_now()))
        if not dry_run:
            store.sync_config_silences(configured_silences(settings, utc_now()))
        http = await open_http(stack)
        for configured in build_sources(settings, http):
            result = await poll_or_report(
                configured.source,
                store,
                configured.poll,
                utc_now,
                alerting=alerting,
                dry_run=dry_run,
            )
            if isinstance(result, PollFailed):
                failures += 1
                continue
            if dry_run:
                _print_dry_run(result)
        if not dry_run:
            store.flush(utc_now(), force=True)
            sender = OutboxSender(store, build_receivers(settings), delivery_settings(settings))
            report = await sender.deliver_due()
            pending, _ = store.outbox_depth()
            log.info(
                "delivery.round",
                sent=report.total_sent,
                retried=sum(report.retried.values()),
                given_up=sum(report.dead.values()),
                pending=pending,
            )
    return 1 if failures else 0


def _print_dry_run(report: CycleReport) -> None:
    for event in report.events:
        task, kind = event.task, type(event).__name__
        click.echo(f"{report.source}: {kind} {task.task_id} {task.status}")
    if not report.notifications:
        click.echo(f"{report.source}: no notification would be sent")
    for notification in report.notifications:
        click.echo(f"--- would send to {notification.receiver} ---")
        click.echo(plain_text(notification), nl=False)


async def test_notify(config: Path, receiver: str) -> int:
    """Send a test message straight to one receiver (not through the outbox)."""
    settings = load_settings(config)
    register_settings_secrets(settings)
    notifiers = build_notifiers(settings)
    notifier = notifiers.get(receiver)
    if notifier is None:
        known = ", ".join(sorted(notifiers)) or "none"
        raise ConfigError(f"no receiver named {receiver!r}; configured: {known}")
    notification = Notification(
        receiver=receiver,
        group_key="test",
        group_labels=(),
        firing=(),
        test=True,
        created_at=utc_now(),
    )
    try:
        await notifier.send(notification, thread=None)
    except DeliveryError as exc:
        click.echo(f"FAIL {receiver}: {exc}", err=True)
        return 1
    click.echo(f"ok   {receiver}: test message accepted")
    return 0


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
    # Read-only inspection must work while the daemon runs: no lock, nothing created.
    try:
        with open_state(settings.state.path, now=now, read_only=True) as store:
            summary = store.summary()
    except StateMissingError as exc:
        click.echo(str(exc))
        return 0
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
