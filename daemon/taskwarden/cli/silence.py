"""``taskwarden silence add|query|list|update|expire``: silences kept in the state, with
amtool's habits (author from ``$USER``, ``--duration`` or ``--end``, ``-o json``).

Silences from the configuration are re-synced at every start (id ``config:<id>``); the
ones added here live until they expire or are expired. These commands read only the state
section of the configuration: they work beside a running daemon (no lock; the store orders
the writes), without the receivers' secrets.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from taskwarden.cli.common import (
    CONFIG_OPTION,
    EXIT_OK,
    OUTPUT_OPTION,
    DurationType,
    Output,
    TimeType,
    call,
    table,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime, timedelta
    from pathlib import Path

    from taskwarden.config import Settings
    from taskwarden.routing import Silence
    from taskwarden.state.protocol import StateStore


@click.group()
def silence() -> None:
    """Suppress notifications for alerts matching label matchers, for a while.

    Silenced alerts are still recorded; a stuck or health alert still firing when its
    silence ends is then notified.
    """


@silence.command("add")
@CONFIG_OPTION
@click.argument("matchers", nargs=-1, required=True)
@click.option(
    "--duration", "--for", "duration", type=DurationType(), default="2h", show_default=True
)
@click.option("--start", type=TimeType(), default=None, help="When it starts (default: now).")
@click.option("--end", type=TimeType(), default=None, help="When it ends (instead of --duration).")
@click.option("--comment", default="", help="Why (shown in silence query).")
@click.option("--author", default=lambda: os.environ.get("USER", ""), help="Who (default $USER).")
@OUTPUT_OPTION
def add(  # click passes every option by name
    *,
    config: Path,
    matchers: tuple[str, ...],
    duration: timedelta,
    start: datetime | None,
    end: datetime | None,
    comment: str,
    author: str,
    output_format: str,
) -> None:
    """Add a silence: MATCHERS such as 'team="catalog"' 'kind=~"DEPLOY_.*"'."""

    def body(out: Output) -> int:
        from taskwarden.errors import ConfigError
        from taskwarden.matchers import parse_all
        from taskwarden.timeutil import format_api_time, utc_now
        from taskwarden.wiring import build_alerting, new_silence

        try:
            parsed = parse_all(matchers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        settings = _settings(config)
        starts = start or utc_now()
        added = new_silence(
            settings,
            build_alerting(settings, config).teams,
            parsed,
            starts_at=starts,
            ends_at=end or starts + duration,
            comment=comment,
            author=author,
        )
        _write(settings, lambda store: store.add_silence(added))
        if output_format == "json":
            out.echo(json.dumps(_json(added, utc_now()), indent=2))
        else:
            out.echo(f"{added.silence_id} silences {_describe(added)} until "
                     f"{format_api_time(added.ends_at)}")  # fmt: skip
        return EXIT_OK

    call(body)


@silence.command("query")
@CONFIG_OPTION
@click.argument("matchers", nargs=-1)
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@OUTPUT_OPTION
def query(
    config: Path, matchers: tuple[str, ...], include_expired: bool, output_format: str
) -> None:
    """Silences (configured and added), those with every one of MATCHERS when given."""
    call(lambda out: show_silences(config, out, matchers, include_expired, output_format))


@silence.command("list")
@CONFIG_OPTION
@click.option("--all", "include_expired", is_flag=True, help="Include expired silences.")
@OUTPUT_OPTION
def list_(config: Path, include_expired: bool, output_format: str) -> None:
    """Every silence (configured and added) with its state and end."""
    call(lambda out: show_silences(config, out, (), include_expired, output_format))


def show_silences(
    config: Path,
    out: Output,
    matchers: tuple[str, ...],
    include_expired: bool,
    output_format: str,
) -> int:
    from taskwarden.errors import ConfigError
    from taskwarden.matchers import parse_all
    from taskwarden.timeutil import format_api_time, utc_now

    try:
        wanted = {str(m) for m in parse_all(matchers)}
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    now = utc_now()
    shown = [
        s
        for s in _silences(_settings(config))
        if (include_expired or s.ends_at > now) and wanted <= {str(m) for m in s.matchers}
    ]
    if output_format == "json":
        out.echo(json.dumps([_json(s, now) for s in shown], indent=2))
        return EXIT_OK
    if not shown:
        out.echo("no silences")
        return EXIT_OK
    rows = [
        [s.silence_id, _state(s, now), format_api_time(s.ends_at), s.created_by or "-",
         s.comment or "-", _describe(s)]
        for s in shown
    ]  # fmt: skip
    out.echo(table(["ID", "STATE", "ENDS", "CREATED BY", "COMMENT", "MATCHERS"], rows))
    return EXIT_OK


@silence.command("update")
@CONFIG_OPTION
@click.argument("silence_id")
@click.option("--duration", "--for", "duration", type=DurationType(), default=None,
              help="New length, from its start (e.g. extend to 6h).")  # fmt: skip
@click.option("--end", type=TimeType(), default=None, help="New end.")
@click.option("--comment", default=None, help="New comment.")
def update(
    config: Path,
    silence_id: str,
    duration: timedelta | None,
    end: datetime | None,
    comment: str | None,
) -> None:
    """Extend, shorten or re-comment a silence (its matchers stay: add a new one for
    other matchers)."""

    def body(out: Output) -> int:
        from taskwarden.errors import ConfigError
        from taskwarden.timeutil import format_api_time

        if duration is None and end is None and comment is None:
            raise ConfigError("nothing to update: give --duration, --end or --comment")
        settings = _settings(config)
        found = _find(settings, silence_id)
        ends = end or (found.starts_at + duration if duration is not None else found.ends_at)
        if ends <= found.starts_at:
            raise ConfigError("a silence must end after it starts")
        changed = replace(
            found, ends_at=ends, comment=found.comment if comment is None else comment
        )
        _write(settings, lambda store: store.add_silence(changed))
        out.echo(f"{silence_id} silences {_describe(changed)} until {format_api_time(ends)}")
        return EXIT_OK

    call(body)


@silence.command("expire")
@CONFIG_OPTION
@click.argument("silence_id")
def expire(config: Path, silence_id: str) -> None:
    """End a silence now."""

    def body(out: Output) -> int:
        from taskwarden.timeutil import utc_now

        settings = _settings(config)
        _find(settings, silence_id)
        _write(settings, lambda store: store.expire_silence(silence_id, utc_now()))
        out.echo(f"{silence_id} expired")
        return EXIT_OK

    call(body)


# --- shared ------------------------------------------------------------------------------------


def _settings(config: Path) -> Settings:
    from taskwarden.config import load_settings

    return load_settings(config, state_only=True)


def _silences(settings: Settings) -> list[Silence]:
    from taskwarden.errors import StateMissingError
    from taskwarden.timeutil import utc_now
    from taskwarden.wiring import open_configured_state

    try:
        with open_configured_state(settings, now=utc_now(), read_only=True) as store:
            return store.silences()
    except StateMissingError:
        return []


def _find(settings: Settings, silence_id: str) -> Silence:
    from taskwarden.errors import ConfigError

    if silence_id.startswith("config:"):
        raise ConfigError(f"{silence_id} comes from the configuration: change it there")
    found = next((s for s in _silences(settings) if s.silence_id == silence_id), None)
    if found is None:
        raise ConfigError(f"no silence with id {silence_id!r} (see: taskwarden silence query)")
    return found


def _write(settings: Settings, change: Callable[[StateStore], object]) -> None:
    from taskwarden.timeutil import utc_now
    from taskwarden.wiring import open_configured_state

    with open_configured_state(settings, now=utc_now(), lock=False) as store:
        change(store)


def _state(silence: Silence, now: datetime) -> str:
    if silence.is_active(now):
        return "active"
    return "expired" if silence.ends_at <= now else "pending"


def _json(silence: Silence, now: datetime) -> dict[str, object]:
    from taskwarden.service.status import silence_json

    return {**silence_json(silence, now), "status": _state(silence, now)}


def _describe(silence: Silence) -> str:
    return ", ".join(str(m) for m in silence.matchers)
