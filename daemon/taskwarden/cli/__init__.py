"""The ``taskwarden`` command line: global options here, one module per command group.

* `taskwarden.cli.daemon`: ``run``, ``once``
* `taskwarden.cli.inspect`: ``state``, ``alerts``; `taskwarden.cli.migrate`: ``migrate``
* `taskwarden.cli.silence`: ``silence add|query|list|update|expire``
* `taskwarden.cli.check`: ``check``, ``test-notify``
* `taskwarden.cli.sim`: ``simulate``; `taskwarden.cli.demo`: ``demo``

Command modules import their heavy dependencies inside the command, so ``--help`` is fast.
"""

from __future__ import annotations

import click

from taskwarden import __version__
from taskwarden.cli import check, daemon, demo, inspect, migrate, silence, sim
from taskwarden.logs import configure_logging


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
    SQLite state file (or a PostgreSQL database shared by several replicas), and
    notifies each team once per incident.
    """
    json_output = None if log_format == "auto" else log_format == "json"
    defaulted = ctx.get_parameter_source("log_level") is click.core.ParameterSource.DEFAULT
    if ctx.invoked_subcommand == "demo" and defaulted:
        log_level = "warning"  # the demo shows alerts; poll logs would bury them
    # The redactor every log line, state row, notification and output line goes through.
    ctx.obj = configure_logging(json_output=json_output, level=log_level)


for command in (
    daemon.run_command,
    daemon.once,
    inspect.state,
    inspect.alerts,
    migrate.migrate,
    check.check,
    check.test_notify,
    silence.silence,
    sim.simulate,
    demo.demo,
):
    cli.add_command(command)


def main() -> None:
    cli()
