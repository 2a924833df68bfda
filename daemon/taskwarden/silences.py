"""``taskwarden silence add|list|expire``: silences kept in the state file.

Silences from the configuration are re-synced at every start (id ``config:<id>``); the
ones added here live until they expire or are expired.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import click

from taskwarden.config import load_settings
from taskwarden.errors import ConfigError, StateMissingError
from taskwarden.matchers import parse_all
from taskwarden.routing import Silence
from taskwarden.state import open_state
from taskwarden.timeutil import format_api_time, utc_now
from taskwarden.wiring import alert_label_names, build_alerting
from taskwarden.yamlfile import did_you_mean

if TYPE_CHECKING:
    from datetime import timedelta
    from pathlib import Path


def add_silence(
    config: Path, matchers: tuple[str, ...], duration: timedelta, comment: str, author: str
) -> int:
    try:
        parsed = parse_all(matchers)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not parsed:
        raise ConfigError("a silence needs at least one matcher, e.g. 'team=\"catalog\"'")
    settings = load_settings(config)
    known = alert_label_names(settings, build_alerting(settings, config).teams)
    unknown = [
        f"label {m.name!r} is never set on an alert{did_you_mean(m.name, known)}"
        for m in parsed
        if m.name not in known
    ]
    if unknown:
        raise ConfigError("this silence could never match: " + "; ".join(unknown))
    now = utc_now()
    silence = Silence(
        silence_id=secrets.token_hex(4),
        matchers=parsed,
        starts_at=now,
        ends_at=now + duration,
        comment=comment,
        created_by=author,
        origin="cli",
    )
    with open_state(settings.state.path, now=now, lock=False) as store:
        store.add_silence(silence)
    click.echo(
        f"{silence.silence_id} silences {_describe(silence)} "
        f"until {format_api_time(silence.ends_at)}"
    )
    return 0


def list_silences(config: Path, *, include_expired: bool) -> int:
    settings = load_settings(config)
    now = utc_now()
    try:
        with open_state(settings.state.path, now=now, read_only=True) as store:
            found = store.silences()
    except StateMissingError:
        found = []
    shown = [s for s in found if include_expired or s.ends_at > now]
    if not shown:
        click.echo("no silences")
    for s in shown:
        state = "active" if s.is_active(now) else ("expired" if s.ends_at <= now else "pending")
        click.echo(
            f"{s.silence_id:<20} {state:<8} until {format_api_time(s.ends_at)}  "
            f"{_describe(s)}  by {s.created_by or '-'}: {s.comment or '-'}"
        )
    return 0


def expire_silence(config: Path, silence_id: str) -> int:
    settings = load_settings(config)
    if silence_id.startswith("config:"):
        raise ConfigError(f"{silence_id} comes from the configuration: remove it there")
    with open_state(settings.state.path, now=utc_now(), lock=False) as store:
        found = store.expire_silence(silence_id, utc_now())
    if not found:
        raise ConfigError(f"no silence with id {silence_id!r} (see: taskwarden silence list)")
    click.echo(f"{silence_id} expired")
    return 0


def _describe(silence: Silence) -> str:
    return ", ".join(str(m) for m in silence.matchers)
