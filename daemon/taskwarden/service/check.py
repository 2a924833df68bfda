"""``taskwarden check``: validate everything at once; ``--connect`` also proves each
source's credentials, Slack ``auth.test`` and SMTP login, one pass / fail line each."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import click

from taskwarden.config import load_config
from taskwarden.errors import TaskwardenError
from taskwarden.rules import BurstRule, FailedRule, StuckRule
from taskwarden.wiring import build_alerting, build_notifiers, build_sources, open_http

if TYPE_CHECKING:
    from pathlib import Path


async def run_check(config: Path, *, connect: bool) -> int:
    """0 when valid (and, with ``connect``, every connection passed); 1 otherwise.

    Configuration errors raise `ConfigError` (exit 2), with every problem listed.
    """
    loaded = load_config(config)
    settings = loaded.settings
    alerting = build_alerting(settings, config)
    notifiers = build_notifiers(settings)
    rules = [r for t in alerting.teams for r in t.rules]
    kinds = {
        "failed": sum(isinstance(r, FailedRule) for r in rules),
        "stuck": sum(isinstance(r, StuckRule) for r in rules),
        "burst": sum(isinstance(r, BurstRule) for r in rules),
    }
    async with AsyncExitStack() as stack:
        http = await open_http(stack)
        sources = build_sources(settings, http)  # raises on a missing credential
        click.echo(
            f"ok   configuration {config}: {len(sources)} source(s), {len(alerting.teams)} "
            f"team(s), {len(rules)} rule(s) ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
            f"{len(notifiers)} receiver(s), {len(settings.silences)} silence(s)"
        )
        for warning in loaded.warnings:
            click.echo(f"warn {warning}")
        if not rules:
            click.echo(
                "warn no team rules: only source-health alerts will be sent "
                "(add team files under `teams:`, see config/teams/)"
            )
        if not connect:
            return 0
        failures = 0
        for configured in sources:
            name = configured.source.name
            try:
                line = await configured.source.check()
            except TaskwardenError as exc:
                failures += 1
                click.echo(f"FAIL source {name}: {exc}")
            else:
                click.echo(f"ok   source {name}: {line}")
        for name, notifier in sorted(notifiers.items()):
            try:
                line = await notifier.check()
            except TaskwardenError as exc:
                failures += 1
                click.echo(f"FAIL receiver {name}: {exc}")
            else:
                click.echo(f"ok   receiver {name}: {line}")
    return 1 if failures else 0
