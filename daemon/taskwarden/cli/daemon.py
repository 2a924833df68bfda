"""``taskwarden run`` (the daemon) and ``taskwarden once`` (one cycle, for cron)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import structlog

from taskwarden.cli.common import CONFIG_OPTION, EXIT_FAILED, EXIT_OK, Output, run

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.poller import CycleReport

log = structlog.get_logger(__name__)


@click.command("run")
@CONFIG_OPTION
def run_command(config: Path) -> None:
    """Run the daemon: poll every source on its interval, alert, deliver, until stopped.

    SIGTERM / SIGINT finish the current cycle and flush the outbox (within
    daemon.shutdown_grace), then exit 0. SIGHUP reloads the configuration; an invalid one is
    rejected and the running one kept. Health: /healthz, /readyz, /metrics on
    daemon.health_bind. Exit 3: the state file was found damaged and moved aside (restart).
    """
    from taskwarden.config import config_loader
    from taskwarden.service.daemon import Daemon

    run(lambda out: Daemon(config_loader(config), redactor=out.redactor).run())


@click.command()
@CONFIG_OPTION
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the changes and the notifications the cycle would send; send nothing, "
    "change no state (works on a copy, beside a running daemon).",
)
def once(config: Path, dry_run: bool) -> None:
    """Run one poll cycle of every source and exit (for cron).

    Exits 0 when every source was polled, 1 when any failed (its state is unchanged and
    the next run repeats its scan), 2 on configuration or state errors.
    """
    run(lambda out: run_once(config, out, dry_run=dry_run))


async def run_once(config: Path, out: Output, *, dry_run: bool) -> int:
    """One cycle of every source, then deliver. Meant for cron: nothing runs between two
    invocations, so groups are flushed at the end of the run instead of waiting for
    ``group_wait``. ``--dry-run`` prints what the cycle would change and send."""
    from taskwarden.config import load_config
    from taskwarden.poller import PollFailed, poll_or_report
    from taskwarden.runtime import Runtime
    from taskwarden.service.leases import source_lease

    # A dry run sends nothing: it needs the sources' credentials, not the receivers'.
    loaded = load_config(config, receivers_as_console=dry_run)
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    failures = 0
    async with Runtime(loaded, redactor=out.redactor, snapshot=dry_run, share_leases=False) as rt:
        for name, configured in rt.sources.items():
            lease = None if dry_run else rt.source_lease(name)
            if not dry_run and lease is None:
                holder = rt.leases.holder_of(source_lease(name))
                out.echo(f"{name}: skipped, polled by {holder.owner if holder else 'a replica'}")
                continue
            result = await poll_or_report(
                configured.source,
                rt.store,
                configured.poll,
                rt.clock,
                alerting=rt.alerting,
                dry_run=dry_run,
                lease=lease,
            )
            if isinstance(result, PollFailed):
                failures += 1
            elif dry_run:
                _print_dry_run(result, out)
        if not dry_run:
            rt.store.flush(rt.clock(), force=True)
            report = await rt.sender.deliver_due()
            pending, _ = rt.store.outbox_depth()
            log.info(
                "delivery.round",
                sent=report.total_sent,
                retried=sum(report.retried.values()),
                given_up=sum(report.dead.values()),
                pending=pending,
            )
    return EXIT_FAILED if failures else EXIT_OK


def _print_dry_run(report: CycleReport, out: Output) -> None:
    from taskwarden.notify.render import plain_text

    for event in report.events:
        task, kind = event.task, type(event).__name__
        out.echo(f"{report.source}: {kind} {task.task_id} {task.status}")
    if not report.notifications:
        out.echo(f"{report.source}: no notification would be sent")
    for notification in report.notifications:
        out.echo(f"--- would send to {notification.receiver} ---")
        out.echo(plain_text(notification), nl=False)
