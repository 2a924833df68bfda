"""The ``taskwarden`` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from taskwarden import __version__
from taskwarden.errors import TaskwardenError
from taskwarden.logs import configure_logging

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from datetime import timedelta


def _call(body: Callable[[], int]) -> None:
    try:
        code = body()
    except TaskwardenError as exc:
        click.echo(f"taskwarden: error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


def _run(coro: Coroutine[Any, Any, int]) -> None:
    try:
        code = asyncio.run(coro)
    except TaskwardenError as exc:
        click.echo(f"taskwarden: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="taskwarden")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    default="auto",
    show_default=True,
    help="JSON lines (production) or console; auto picks console on a TTY.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Lowest level logged (the demo defaults to warning).",
)
@click.pass_context
def cli(ctx: click.Context, log_format: str, log_level: str) -> None:
    """Alerts on failed and stuck catalogue tasks (Digital River, Elastic Path).

    taskwarden polls the vendors' task feeds, remembers what it has seen in a local
    SQLite state file, and notifies each team once per incident.
    """
    json_output = None if log_format == "auto" else log_format == "json"
    defaulted = ctx.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT
    if ctx.invoked_subcommand == "demo" and defaulted:
        log_level = "warning"  # the demo shows alerts; poll logs would bury them
    configure_logging(json_output=json_output, level=log_level)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8089, show_default=True)
@click.option("--api-key", default="sim-api-key", show_default=True, help="Accepted API key.")
@click.option(
    "--tasks",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Generate this many tasks over the last 29 days at start.",
)
def simulate(host: str, port: int, api_key: str, tasks: int) -> None:
    """Run the Digital River / Elastic Path API simulator until interrupted.

    Digital River: GET /v1/products/tasks[/{taskId}]. Elastic Path: POST /oauth/access_token
    (client sim-client-id / sim-client-secret), GET /pcm/jobs[/{id}[/errors]].
    Control: POST /_sim/tasks, /_sim/tasks/{id}/status, /_sim/generate, /_sim/faults,
    /_sim/clock; GET /_sim/stats.
    """
    from taskwarden.simulator.standalone import serve_forever

    _run(serve_forever(host=host, port=port, api_key=api_key, tasks=tasks))


CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TASKWARDEN_CONFIG",
    required=True,
    help="YAML configuration file (or $TASKWARDEN_CONFIG).",
)


@cli.command()
@CONFIG_OPTION
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the changes and the notifications the cycle would send; send nothing, "
    "change no state.",
)
def once(config: Path, dry_run: bool) -> None:
    """Run one poll cycle of every source and exit (for cron).

    Exits 0 when every source was polled, 1 when any failed (its state is unchanged and
    the next run repeats its scan), 2 on configuration or state errors.
    """
    from taskwarden.commands import run_once

    _run(run_once(config, dry_run=dry_run))


@cli.command()
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def state(config: Path, as_json: bool) -> None:
    """Show checkpoints, open tasks with their age, and task counts per status.

    Safe while the daemon runs: it only reads the state file.
    """
    from taskwarden.commands import show_state

    _call(lambda: show_state(config, as_json=as_json))


@cli.command()
@CONFIG_OPTION
def run(config: Path) -> None:
    """Run the daemon: poll every source on its interval, alert, deliver, until stopped.

    SIGTERM / SIGINT finish the current cycle and flush the outbox (within
    daemon.shutdown_grace), then exit 0. SIGHUP reloads the configuration; an invalid one is
    rejected and the running one kept. Health: /healthz, /readyz, /metrics on
    daemon.health_bind.
    """
    from taskwarden.service.daemon import Daemon

    _run(Daemon(config).run())


@cli.command()
@CONFIG_OPTION
@click.option(
    "--connect", is_flag=True, help="Also check API credentials, Slack auth.test and SMTP login."
)
def check(config: Path, connect: bool) -> None:
    """Validate the configuration and team files, reporting every error at once.

    Exit 0 when valid (and every connection passed), 1 when a connection failed, 2 when
    the configuration is invalid.
    """
    from taskwarden.service.check import run_check

    _run(run_check(config, connect=connect))


@cli.command("test-notify")
@CONFIG_OPTION
@click.argument("receiver")
def test_notify(config: Path, receiver: str) -> None:
    """Send a test message to RECEIVER now (bypasses routing and the outbox).

    Exits 0 when the receiver accepted it, 1 when delivery failed (the reason is printed).
    """
    from taskwarden.commands import test_notify as run_test_notify

    _run(run_test_notify(config, receiver))


class DurationType(click.ParamType):  # type: ignore[type-arg] # generic only in newer click stubs
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from taskwarden.config import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@cli.group()
def silence() -> None:
    """Suppress notifications for alerts matching label matchers, for a while.

    Silenced alerts are still recorded; a stuck or health alert still firing when its
    silence ends is then notified.
    """


@silence.command("add")
@CONFIG_OPTION
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", type=DurationType(), default="2h", show_default=True)
@click.option("--comment", default="", help="Why (shown in silence list).")
@click.option("--author", default=lambda: os.environ.get("USER", ""), help="Who.")
def silence_add(
    config: Path, matchers: tuple[str, ...], duration: timedelta, comment: str, author: str
) -> None:
    """Add a silence: MATCHERS such as 'team="catalog"' 'kind=~"DEPLOY_.*"'."""
    from taskwarden.silences import add_silence

    _call(lambda: add_silence(config, matchers, duration, comment, author))


@silence.command("list")
@CONFIG_OPTION
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
def silence_list(config: Path, include_expired: bool) -> None:
    """List silences (configured and added) with their state and end."""
    from taskwarden.silences import list_silences

    _call(lambda: list_silences(config, include_expired=include_expired))


@silence.command("expire")
@CONFIG_OPTION
@click.argument("silence_id")
def silence_expire(config: Path, silence_id: str) -> None:
    """End a silence now."""
    from taskwarden.silences import expire_silence

    _call(lambda: expire_silence(config, silence_id))


@cli.command()
def demo() -> None:
    """Run the real daemon against a scripted simulator scenario and show each alert.

    Failed deploys with error details, a failed Elastic Path import, a task that hangs and
    then completes, a burst of failures; delivered to the console and to a Slack-compatible
    endpoint on loopback. Needs no credentials and no network; ends by itself in about 20 s.
    """
    from taskwarden.demo import run_demo

    _run(run_demo())


def main() -> None:
    cli()
