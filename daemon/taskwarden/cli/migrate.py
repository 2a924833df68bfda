"""``taskwarden migrate``: bring the state's schema up to date, explicitly."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from taskwarden.cli.common import CONFIG_OPTION, EXIT_OK, Output, call

if TYPE_CHECKING:
    from pathlib import Path


@click.command()
@CONFIG_OPTION
def migrate(config: Path) -> None:
    """Apply the state's schema migrations, one transaction per step.

    A replica never migrates a shared PostgreSQL database on its own (unless
    ``state.migrate: true``): run this once per upgrade. Two runs at once take turns.
    The SQLite file is migrated by the daemon when it opens it; this does the same.
    """
    call(lambda out: apply_migrations(config, out))


def apply_migrations(config: Path, out: Output) -> int:
    from taskwarden.config import load_settings
    from taskwarden.state import open_state
    from taskwarden.state.schema import SCHEMA_VERSION
    from taskwarden.timeutil import utc_now

    settings = load_settings(config, state_only=True)
    state = settings.state
    if state.url is None:
        with open_state(state.path, now=utc_now()):
            out.echo(f"state file {state.path}: schema v{SCHEMA_VERSION}")
        return EXIT_OK
    import psycopg

    from taskwarden.state import postgres

    password = state.password.get_secret_value() if state.password is not None else None
    try:
        conn = postgres.connect(state.url, password, application="taskwarden migrate")
        try:
            applied = postgres.migrate(conn)
        finally:
            conn.raw.close()
    except psycopg.Error as exc:
        raise postgres.translate(exc, postgres.describe(state.url)) from exc
    where = postgres.describe(state.url)
    if applied:
        steps = ", ".join(f"v{v}" for v in applied)
        out.echo(f"{where}: applied {steps}; schema v{SCHEMA_VERSION}")
    else:
        out.echo(f"{where}: schema v{SCHEMA_VERSION}, nothing to do")
    return EXIT_OK
