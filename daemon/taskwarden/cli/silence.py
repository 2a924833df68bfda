"""``taskwarden silence add|list|expire``: silences kept in the state file.

Silences from the configuration are re-synced at every start (id ``config:<id>``); the
ones added here live until they expire or are expired. These commands work beside a
running daemon (no lock; SQLite orders the writes).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from taskwarden.cli.common import CONFIG_OPTION, EXIT_OK, DurationType, Output, call

if TYPE_CHECKING:
    from datetime import timedelta
    from pathlib import Path

    from taskwarden.routing import Silence


@click.group()
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
def add(
    config: Path, matchers: tuple[str, ...], duration: timedelta, comment: str, author: str
) -> None:
    """Add a silence: MATCHERS such as 'team="catalog"' 'kind=~"DEPLOY_.*"'."""
    call(
        lambda out: add_silence(
            config, out, matchers=matchers, duration=duration, comment=comment, author=author
        )
    )


def add_silence(
    config: Path,
    out: Output,
    *,
    matchers: tuple[str, ...],
    duration: timedelta,
    comment: str,
    author: str,
) -> int:
    from taskwarden.config import load_settings
    from taskwarden.errors import ConfigError
    from taskwarden.matchers import parse_all
    from taskwarden.timeutil import format_api_time, utc_now
    from taskwarden.wiring import build_alerting, new_silence, open_configured_state

    try:
        parsed = parse_all(matchers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = load_settings(config, state_only=True)
    now = utc_now()
    added = new_silence(
        settings,
        build_alerting(settings, config).teams,
        parsed,
        starts_at=now,
        ends_at=now + duration,
        comment=comment,
        author=author,
    )
    with open_configured_state(settings, now=now, lock=False) as store:
        store.add_silence(added)
    out.echo(
        f"{added.silence_id} silences {_describe(added)} until {format_api_time(added.ends_at)}"
    )
    return EXIT_OK


@silence.command("list")
@CONFIG_OPTION
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
def list_(config: Path, include_expired: bool) -> None:
    """List silences (configured and added) with their state and end."""
    call(lambda out: list_silences(config, out, include_expired=include_expired))


def list_silences(config: Path, out: Output, *, include_expired: bool) -> int:
    from taskwarden.config import load_settings
    from taskwarden.errors import StateMissingError
    from taskwarden.timeutil import format_api_time, utc_now
    from taskwarden.wiring import open_configured_state

    settings = load_settings(config, state_only=True)
    now = utc_now()
    try:
        with open_configured_state(settings, now=now, read_only=True) as store:
            found = store.silences()
    except StateMissingError:
        found = []
    shown = [s for s in found if include_expired or s.ends_at > now]
    if not shown:
        out.echo("no silences")
    for s in shown:
        state = "active" if s.is_active(now) else ("expired" if s.ends_at <= now else "pending")
        out.echo(
            f"{s.silence_id:<20} {state:<8} until {format_api_time(s.ends_at)}  "
            f"{_describe(s)}  by {s.created_by or '-'}: {s.comment or '-'}"
        )
    return EXIT_OK


@silence.command("expire")
@CONFIG_OPTION
@click.argument("silence_id")
def expire(config: Path, silence_id: str) -> None:
    """End a silence now."""
    call(lambda out: expire_silence(config, out, silence_id))


def expire_silence(config: Path, out: Output, silence_id: str) -> int:
    from taskwarden.config import load_settings
    from taskwarden.errors import ConfigError
    from taskwarden.timeutil import utc_now
    from taskwarden.wiring import open_configured_state

    settings = load_settings(config, state_only=True)
    if silence_id.startswith("config:"):
        raise ConfigError(f"{silence_id} comes from the configuration: remove it there")
    with open_configured_state(settings, now=utc_now(), lock=False) as store:
        found = store.expire_silence(silence_id, utc_now())
    if not found:
        raise ConfigError(f"no silence with id {silence_id!r} (see: taskwarden silence list)")
    out.echo(f"{silence_id} expired")
    return EXIT_OK


def _describe(silence: Silence) -> str:
    return ", ".join(str(m) for m in silence.matchers)
