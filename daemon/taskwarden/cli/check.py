"""``taskwarden check`` (is the configuration right, do the credentials work) and
``taskwarden test-notify`` (does a receiver get a message)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import click

from taskwarden.cli.common import CONFIG_OPTION, EXIT_FAILED, EXIT_OK, Output, run

if TYPE_CHECKING:
    from pathlib import Path


@click.command()
@CONFIG_OPTION
@click.option(
    "--connect", is_flag=True, help="Also check API credentials, Slack auth.test and SMTP login."
)
def check(config: Path, connect: bool) -> None:
    """Validate the configuration and team files, reporting every error at once.

    Exit 0 when valid (and every connection passed), 1 when a connection failed, 2 when
    the configuration is invalid.
    """
    run(lambda out: run_check(config, out, connect=connect))


async def run_check(config: Path, out: Output, *, connect: bool) -> int:
    """0 when valid (and, with ``connect``, every connection passed); 1 otherwise.

    Configuration errors raise `ConfigError` (exit 2), with every problem listed.
    """
    from taskwarden.config import load_config
    from taskwarden.errors import ConfigError, TaskwardenError
    from taskwarden.rules import BurstRule, FailedRule, StuckRule
    from taskwarden.runtime import wire
    from taskwarden.wiring import open_http, settings_secrets, team_problems_of_raw

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        # The team files are checked too, so that one run says every problem.
        raise ConfigError("\n".join([str(exc), *team_problems_of_raw(config)])) from None
    out.redactor.use(settings_secrets(loaded.settings))
    async with AsyncExitStack() as stack:
        wiring = wire(loaded, await open_http(stack))  # raises on a missing credential
        rules = [r for t in wiring.alerting.teams for r in t.rules]
        kinds = {
            "failed": sum(isinstance(r, FailedRule) for r in rules),
            "stuck": sum(isinstance(r, StuckRule) for r in rules),
            "burst": sum(isinstance(r, BurstRule) for r in rules),
        }
        out.echo(
            f"ok   configuration {config}: {len(wiring.sources)} source(s), "
            f"{len(wiring.alerting.teams)} team(s), {len(rules)} rule(s) "
            f"({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
            f"{len(wiring.receivers)} receiver(s), {len(loaded.settings.silences)} silence(s)"
        )
        for warning in loaded.warnings:
            out.echo(f"warn {warning}")
        if not rules:
            out.echo(
                "warn no team rules: only source-health alerts will be sent "
                "(add team files under `teams:`, see config/teams/)"
            )
        if not connect:
            return EXIT_OK
        checks = [
            *((f"source {n}", c.source.check) for n, c in sorted(wiring.sources.items())),
            *((f"receiver {n}", r.notifier.check) for n, r in sorted(wiring.receivers.items())),
        ]
        failures = 0
        for what, probe in checks:
            try:
                line = await probe()
            except TaskwardenError as exc:
                failures += 1
                out.echo(f"FAIL {what}: {exc}")
            else:
                out.echo(f"ok   {what}: {line}")
    return EXIT_FAILED if failures else EXIT_OK


@click.command("test-notify")
@CONFIG_OPTION
@click.argument("receiver")
def test_notify(config: Path, receiver: str) -> None:
    """Send a test message to RECEIVER now (bypasses routing and the outbox).

    Exits 0 when the receiver accepted it, 1 when delivery failed (the reason is printed).
    """
    run(lambda out: send_test(config, receiver, out))


async def send_test(config: Path, receiver: str, out: Output) -> int:
    from taskwarden.alerts import Notification
    from taskwarden.config import load_settings
    from taskwarden.errors import ConfigError, DeliveryError
    from taskwarden.timeutil import utc_now
    from taskwarden.wiring import build_receivers, settings_secrets

    settings = load_settings(config)
    out.redactor.use(settings_secrets(settings))
    receivers = build_receivers(settings)
    found = receivers.get(receiver)
    if found is None:
        known = ", ".join(sorted(receivers)) or "none"
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
        await found.notifier.send(notification, thread=None)
    except DeliveryError as exc:
        out.echo(f"FAIL {receiver}: {exc}", err=True)
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - whatever a client library raises, said plainly
        out.echo(f"FAIL {receiver}: {type(exc).__name__}: {exc}", err=True)
        return EXIT_FAILED
    out.echo(f"ok   {receiver}: test message accepted")
    return EXIT_OK
