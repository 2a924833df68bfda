"""``taskwarden demo``: the real daemon against a scripted simulator scenario.

The simulator (Digital River and Elastic Path), a Slack-compatible endpoint on loopback and
the daemon (`taskwarden run`, with one-second intervals) run in this process. A script
changes tasks as a catalogue team would: a few changes, two failed deploys with error
details, a failed Elastic Path import, a task that hangs in PROCESSING and later completes,
and a burst of failures. Each message is shown as it reaches Slack; the console receiver
prints the full text. No credentials and no network; it ends by itself with a summary.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from taskwarden.cli.common import Output, run

if TYPE_CHECKING:
    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import ElasticPathJobs
    from taskwarden.simulator.slack import SlackMessage, SlackServer

KEY = "demo-api-key"
EP_SECRET = "demo-client-secret"  # noqa: S105 - the simulator's demo credential

TEAM = """\
team: catalog
rules:
  - {name: failed-deploys, type: failed, severity: critical,
     matchers: ['kind=~"DEPLOY_PRODUCT|RETIRE_PRODUCT"']}
  - {name: failed-tasks, type: failed, severity: warning}
  - {name: stuck, type: stuck, after: 6s}
  - {name: failure-burst, type: burst, threshold: 10, window: 1m}
"""


def _config(tmp: Path, sim: Simulator, slack: SlackServer) -> Path:
    (tmp / "teams").mkdir()
    (tmp / "teams" / "catalog.yaml").write_text(TEAM)
    config = tmp / "taskwarden.yaml"
    config.write_text(
        f"""\
state: {{path: {tmp / "state.db"}}}
sources:
  demo_dr: {{base_url: {sim.base_url}, interval: 1s, overlap: 5s, initial_lookback: 1h}}
  demo_ep:
    kind: elasticpath
    base_url: {sim.base_url}
    client_id: demo-client
    interval: 1s
    overlap: 5s
    initial_lookback: 1h
teams: ["teams/*.yaml"]
receivers:
  slack: {{slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0.2s}}}}
  incidents: {{webhook: {{max_alerts: 5}}}}
  console: {{console: true}}
route:
  receiver: console
  group_by: [team, rule, source, kind]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - {{receiver: slack, matchers: ['team=~".+"'], continue: true}}
    - {{receiver: incidents, matchers: ['severity="critical"'], continue: true}}
    - {{receiver: console, matchers: ['team=~".+"']}}
notifications: {{fallback_receiver: [console, slack]}}
daemon: {{health_bind: "127.0.0.1:0", deliver_interval: 0.25s, shutdown_grace: 10s}}
"""
    )
    return config


def _show_payload(started: float) -> object:
    def show(payload: dict[str, Any]) -> None:
        at = time.monotonic() - started
        names = sorted({a["labels"].get("alertname", "?") for a in payload["alerts"]})
        click.secho(
            f"[{at:5.1f}s] webhook <- {payload['status']} {len(payload['alerts'])} alert(s) "
            f"{', '.join(names)} (Alertmanager payload v{payload['version']})",
            fg="magenta",
        )

    return show


def _show(started: float) -> object:
    def show(message: SlackMessage) -> None:
        where = "  (in thread)" if message.thread_ts else ""
        at = time.monotonic() - started
        click.secho(f"[{at:5.1f}s] slack #{message.channel} <- {message.text}{where}", fg="cyan")

    return show


async def _script(sim: Simulator, ep: ElasticPathJobs) -> None:
    echo = click.echo
    await asyncio.sleep(1.5)
    echo("script: a deploy, a retire, an update and an import are submitted")
    deploy = sim.add_task(request_type="DEPLOY_PRODUCT", status="PROCESSING")
    retire = sim.add_task(request_type="RETIRE_PRODUCT", status="PROCESSING")
    hang = sim.add_task(request_type="UPDATE_PRODUCT", status="PROCESSING")
    job = ep.add_job(status="started", job_type="product-import")
    await asyncio.sleep(2)
    echo("script: the deploy and the retire fail (with deployment errors)")
    sim.set_status(
        deploy.task_id,
        "FAILED",
        deployment_errors=[{"code": "PRICE_MISSING", "description": "No price for locale de_DE"}],
    )
    sim.set_status(
        retire.task_id,
        "FAILED",
        errors=[{"code": "LIVE_ORDERS", "description": "Product has open subscriptions"}],
    )
    await asyncio.sleep(2)
    echo("script: the Elastic Path product import fails")
    ep.set_status(job.job_id, "failed", errors=["Row 17: sku is empty", "Row 42: bad price"])
    await asyncio.sleep(6)
    echo(f"script: the update {hang.task_id[:8]} has hung in PROCESSING; now it completes")
    sim.set_status(hang.task_id, "COMPLETED")
    await asyncio.sleep(2)
    echo("script: a bad catalogue import: 25 updates fail at once")
    burst = [sim.add_task(request_type="UPDATE_VARIATION", status="PROCESSING") for _ in range(25)]
    await asyncio.sleep(1.5)
    for task in burst:
        sim.set_status(task.task_id, "FAILED")
    await asyncio.sleep(5)


@click.command()
def demo() -> None:
    """Run the real daemon against a scripted simulator scenario and show each alert.

    Failed deploys with error details, a failed Elastic Path import, a task that hangs and
    then completes, a burst of failures; delivered to the console, to a Slack-compatible
    endpoint and (critical alerts) to an Alertmanager-format webhook, all on loopback.
    Needs no credentials and no network; ends by itself in about 20 s.
    """
    run(run_demo)


async def run_demo(out: Output) -> int:
    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import install_elasticpath
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.simulator.webhook import WebhookConsumer, running_webhook_consumer

    sim = Simulator(api_key=KEY)
    ep = install_elasticpath(sim, client_id="demo-client", client_secret=EP_SECRET)
    for _ in range(5):
        sim.add_task(request_type="CREATE_PRODUCT", status="COMPLETED")
    started = time.monotonic()
    slack = SlackServer(min_interval=0.2)
    slack.on_message.append(_show(started))  # type: ignore[arg-type]
    hook = WebhookConsumer()
    hook.on_payload.append(_show_payload(started))  # type: ignore[arg-type]
    # The demo's credentials reach the daemon as its environment would, without touching
    # this process's own environment.
    environ = {
        **os.environ,
        "TASKWARDEN_SOURCES__DEMO_DR__API_KEY": KEY,
        "TASKWARDEN_SOURCES__DEMO_EP__CLIENT_SECRET": EP_SECRET,
        "TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN": slack.token,
    }
    async with running_webhook_consumer(hook):
        environ["TASKWARDEN_RECEIVERS__INCIDENTS__WEBHOOK__URL"] = hook.url
        code = await _run(sim, ep, slack, started, environ, out)
    out.echo(f"{len(hook.payloads)} webhook payload(s) in the Alertmanager format")
    return code


async def _run(  # noqa: PLR0917 - the demo's cast, passed along once
    sim: Simulator,
    ep: ElasticPathJobs,
    slack: SlackServer,
    started: float,
    environ: dict[str, str],
    out: Output,
) -> int:
    from taskwarden.config import config_loader
    from taskwarden.service.daemon import Daemon
    from taskwarden.simulator import running_simulator
    from taskwarden.simulator.slack import running_slack
    from taskwarden.state import open_state

    with tempfile.TemporaryDirectory() as tmp:
        async with running_simulator(sim), running_slack(slack):
            config = _config(Path(tmp), sim, slack)
            daemon = Daemon(
                config_loader(config, environ=environ),
                redactor=out.redactor,
                handle_signals=False,
            )
            running = asyncio.create_task(daemon.run())
            ready = asyncio.create_task(daemon.ready.wait())
            await asyncio.wait({running, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if running.done():
                ready.cancel()
                return running.result()  # raises the daemon's start-up error
            click.echo(
                f"simulator {sim.base_url}, Slack {slack.base_url}, health {daemon.health_url}; "
                "polling every 1s"
            )
            await _script(sim, ep)
            daemon.request_stop()
            code = await running
        with open_state(Path(tmp) / "state.db", now=sim.now(), read_only=True) as store:
            rules = Counter(r["rule"] for r in store.alerts())
            sent = sum(1 for r in store.outbox() if r["state"] == "sent")
            pending, _ = store.outbox_depth()
    out.echo("")
    out.echo(
        f"done in {time.monotonic() - started:.0f}s: alerts by rule {dict(sorted(rules.items()))}; "
        f"{len(slack.messages)} Slack message(s), {sent} notification(s) delivered, "
        f"{pending} left in the outbox; "
        f"{sum(sim.requests.values())} vendor API calls"
    )
    return code
