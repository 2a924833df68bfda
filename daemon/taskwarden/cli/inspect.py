"""``taskwarden state`` and ``taskwarden alerts``: what the state remembers, read-only,
beside the daemon, without the receivers' secrets."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from taskwarden.cli.common import (
    CONFIG_OPTION,
    EXIT_OK,
    OUTPUT_OPTION,
    DurationType,
    Output,
    call,
    table,
)

if TYPE_CHECKING:
    from datetime import datetime, timedelta
    from pathlib import Path

    from taskwarden.state.protocol import LeaseHolder, StateSummary


@click.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def state(config: Path, as_json: bool) -> None:
    """Show checkpoints, open tasks with their age, task counts per status, and which
    replica holds which source.

    Safe while the daemon runs: it only reads the state (no lock, nothing created; on
    PostgreSQL every write is discarded).
    """
    call(lambda out: show_state(config, out, as_json=as_json))


def show_state(config: Path, out: Output, *, as_json: bool) -> int:
    from taskwarden.config import load_settings
    from taskwarden.errors import StateMissingError
    from taskwarden.timeutil import format_api_time, utc_now
    from taskwarden.wiring import open_configured_state

    settings = load_settings(config, state_only=True)
    now = utc_now()
    try:
        with open_configured_state(settings, now=now, read_only=True) as store:
            summary = store.summary()
    except StateMissingError as exc:
        out.echo(str(exc))
        return EXIT_OK
    if as_json:
        out.echo(json.dumps(summary_json(summary, format_api_time(now)), indent=2))
        return EXIT_OK
    out.echo(f"state {summary.path} (schema v{summary.schema_version})")
    if not summary.sources:
        out.echo("no source has been polled yet")
    for s in summary.sources:
        checkpoint = format_api_time(s.checkpoint) if s.checkpoint else "never"
        strategy = s.last_strategy or "-"
        out.echo(
            f"\n[{s.source}] checkpoint {checkpoint}; "
            f"last poll used {s.last_api_calls} API call(s) ({strategy})"
        )
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.tasks_by_status.items())) or "none"
        out.echo(f"  tasks tracked: {counts}")
        for t in s.open_tasks:
            age = now - t.received_time
            out.echo(
                f"  open {t.task_id} {t.status:<10} {t.kind:<28} age {_age(age.total_seconds())}"
            )
    if summary.leases:
        out.echo("\nleases (who polls and delivers what):")
    for lease in summary.leases:
        out.echo(f"  {lease.name:<32} {_holding(lease, now)}")
    return EXIT_OK


@click.command()
@CONFIG_OPTION
@click.argument("matchers", nargs=-1)
@click.option(
    "--since",
    type=DurationType(),
    default="24h",
    show_default=True,
    help="Also alerts told once, and resolved ones, that changed within this.",
)
@OUTPUT_OPTION
def alerts(config: Path, matchers: tuple[str, ...], since: timedelta, output_format: str) -> None:
    """Alerts: stateful ones still firing, and every one that changed within --since;
    those matching every one of MATCHERS (such as 'team="catalog"') when given."""
    call(lambda out: show_alerts(config, out, matchers, since, output_format))


def show_alerts(
    config: Path, out: Output, matchers: tuple[str, ...], since: timedelta, output_format: str
) -> int:
    from taskwarden.alerts import humanize
    from taskwarden.config import load_settings
    from taskwarden.errors import ConfigError, StateMissingError
    from taskwarden.matchers import parse_all
    from taskwarden.service.status import alert_json, matching
    from taskwarden.timeutil import utc_now
    from taskwarden.wiring import open_configured_state

    try:
        wanted = parse_all(matchers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = load_settings(config, state_only=True)
    now = utc_now()
    try:
        with open_configured_state(settings, now=now, read_only=True) as store:
            found = matching(store.alert_records(now - since), wanted)
    except StateMissingError:
        found = []
    if output_format == "json":
        out.echo(json.dumps([alert_json(r) for r in found], indent=2))
        return EXIT_OK
    if not found:
        out.echo("no alerts")
        return EXIT_OK
    rows = [
        [
            r.alert.state.value,
            r.alert.severity.value,
            r.alert.label("team") or "-",
            r.alert.rule,
            humanize(now - r.alert.starts_at) if r.alert.starts_at else "-",
            r.outcome or "pending",
            " ".join(r.alert.title.split()),
        ]
        for r in found
    ]
    out.echo(table(["STATUS", "SEVERITY", "TEAM", "RULE", "AGE", "OUTCOME", "TITLE"], rows))
    return EXIT_OK


def _holding(lease: LeaseHolder, now: datetime) -> str:
    if lease.owner is None:
        return f"released (epoch {lease.epoch})"
    left = (lease.expires - now).total_seconds()
    when = f"expires in {left:.0f}s" if left >= 0 else f"EXPIRED {-left:.0f}s ago"
    return f"{lease.owner} (epoch {lease.epoch}, {when})"


def summary_json(summary: StateSummary, now_text: str) -> dict[str, Any]:
    from taskwarden.timeutil import format_api_time

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
        "leases": [
            {
                "name": lease.name,
                "owner": lease.owner,
                "epoch": lease.epoch,
                "expires": format_api_time(lease.expires) if lease.expires else None,
            }
            for lease in summary.leases
        ],
    }


def _age(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h{minutes:02d}m" if days else f"{hours}h{minutes:02d}m"
