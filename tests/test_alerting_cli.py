"""Alerting through the real command line: ``once`` (and a SIGKILL in the middle of a
send), ``once --dry-run``, ``silence``, ``test-notify``, the Slack rate limit."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from taskwarden.cli import cli
from taskwarden.outbox import Receiver
from taskwarden.simulator.faults import Fault
from taskwarden.simulator.slack import SlackServer, running_slack
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.state import open_state

from .alerting_harness import Harness, slack_bot
from .conftest import API_KEY
from .helpers import TASKWARDEN, subprocess_env
from .test_alerting import TEAM

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.sources.digitalriver import DigitalRiverClient

TEAM_FILE = """\
team: catalog
rules:
  - name: deploys
    type: failed
    severity: critical
    matchers: ['kind=~"DEPLOY_PRODUCT|RETIRE_PRODUCT"']
  - name: other-failures
    type: failed
"""


def write_config(tmp_path: Path, sim_url: str, slack: SlackServer) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    (tmp_path / "teams" / "catalog.yaml").write_text(TEAM_FILE)
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"""\
state:
  path: {tmp_path / "state.db"}
sources:
  dr:
    base_url: {sim_url}
    retry_attempts: 1
teams: ["teams/*.yaml"]
receivers:
  slack:
    slack:
      channel: alerts
      base_url: {slack.api_url}
      min_interval: 0s
route:
  receiver: slack
  group_wait: 30s
"""
    )
    return config


def env(slack: SlackServer) -> dict[str, str]:
    return subprocess_env(
        TASKWARDEN_SOURCES__DR__API_KEY=API_KEY,
        TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN=slack.token,
    )


async def once(config: Path, slack: SlackServer, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN,
        "--log-format=json",
        "once",
        "-c",
        str(config),
        *extra,
        env=env(slack),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_sigkill_mid_send_yields_at_most_one_duplicate(
    tmp_path: Path, sim: Simulator, slack: SlackServer
) -> None:
    sim.unfreeze_clock()  # the subprocess runs on the real clock
    config = write_config(tmp_path, sim.base_url, slack)
    assert (await once(config, slack))[0] == 0  # baseline
    sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
    # Slack records the message, then its answer never comes: the worst moment to die.
    slack.inject(Fault("slow", delay=5, endpoint="slack.postMessage"))
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN, "once", "-c", str(config), env=env(slack),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await slack.wait_received(1, within=60)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert len(slack.messages) == 1
    for _ in range(2):
        assert (await once(config, slack))[0] == 0
    assert len(slack.messages) == 2  # the one in flight is repeated once, never lost
    assert slack.messages[0].text == slack.messages[1].text
    assert "DEPLOY_PRODUCT failed" in slack.messages[0].text


@pytest.mark.slow
async def test_dry_run_prints_notifications_and_changes_nothing(
    tmp_path: Path, sim: Simulator, slack: SlackServer
) -> None:
    sim.unfreeze_clock()
    config = write_config(tmp_path, sim.base_url, slack)
    assert (await once(config, slack))[0] == 0
    task = sim.add_task(status="FAILED", request_type="UPDATE_PRODUCT")
    for _ in range(2):  # twice: nothing was recorded the first time
        code, out = await once(config, slack, "--dry-run")
        assert code == 0
        assert f"TaskAppeared {task.task_id} FAILED" in out
        assert "--- would send to slack ---" in out
        assert "[WARNING] FIRING: UPDATE_PRODUCT failed" in out
    assert slack.messages == []
    assert (await once(config, slack))[0] == 0
    assert len(slack.messages) == 1


def test_silence_commands(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(f"state:\n  path: {tmp_path / 'state.db'}\n")
    runner = CliRunner()
    added = runner.invoke(
        cli,
        ["silence", "add", "-c", str(config), 'team="catalog"', "kind=~DEPLOY_.*", "--for", "90m",
         "--comment", "release night", "--author", "ana"],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    silence_id = added.output.split()[0]
    listed = runner.invoke(cli, ["silence", "list", "-c", str(config)])
    assert silence_id in listed.output
    assert 'team="catalog", kind=~"DEPLOY_.*"' in listed.output
    assert "active" in listed.output
    assert "release night" in listed.output
    expired = runner.invoke(cli, ["silence", "expire", "-c", str(config), silence_id])
    assert expired.exit_code == 0
    assert "no silences" in runner.invoke(cli, ["silence", "list", "-c", str(config)]).output
    assert "expired" in runner.invoke(cli, ["silence", "list", "-c", str(config), "--all"]).output
    bad = runner.invoke(cli, ["silence", "add", "-c", str(config), 'kind=~"("'])
    assert bad.exit_code == 2
    assert "not valid RE2" in bad.output
    unknown = runner.invoke(cli, ["silence", "expire", "-c", str(config), "nope"])
    assert unknown.exit_code == 2
    assert "no silence with id 'nope'" in unknown.output


async def test_test_notify_reports_success_and_failure(
    tmp_path: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskwarden.cli.check import send_test
    from taskwarden.cli.common import Output
    from taskwarden.logs import Redactor

    config = write_config(tmp_path, "http://127.0.0.1:9", slack)
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", slack.token)
    assert await send_test(config, "slack", Output(Redactor())) == 0
    [message] = slack.messages
    assert message.text.startswith("[TEST]")
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", "xoxb-revoked")
    assert await send_test(config, "slack", Output(Redactor())) == 1


def test_config_rejects_routes_to_unknown_receivers(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    head = "receivers:\n  console_out: {console: true}\nroute:\n  receiver: console_out\n"
    config.write_text(head + "  routes:\n    - {receiver: pager, matchers: ['x=\"1\"']}\n")
    result = CliRunner().invoke(cli, ["check", "-c", str(config)])
    assert result.exit_code == 2
    assert (
        "route.routes.0.receiver (line 6): unknown receiver 'pager'; defined: console_out"
        in result.output
    )
    config.write_text(head + "  routes:\n    - {receiver: console_out, matchers: ['bad']}\n")
    result = CliRunner().invoke(cli, ["check", "-c", str(config)])
    assert result.exit_code == 2
    assert (
        "route.routes.0.matchers (line 6): matcher 'bad', column 4: expected an "
        "operator" in result.output
    )


async def test_sender_honours_slack_rate_limit(
    tmp_path: Path, sim: Simulator, dr_client: DigitalRiverClient
) -> None:
    strict = SlackServer(min_interval=1.0)
    async with running_slack(strict) as server:
        store = open_state(tmp_path / "state.db", now=sim.now())
        h = Harness(
            sim=sim,
            source=DigitalRiverSource(dr_client),
            store=store,
            notifiers={"slack": Receiver(slack_bot(server), min_interval=1.0)},
            teams=(TEAM,),
        )
        try:
            await h.cycle()
            kinds = ["DEPLOY_PRODUCT", "UPDATE_PRODUCT", "CREATE_PRODUCT"]
            tasks = [sim.add_task(status="PROCESSING", request_type=k) for k in kinds]
            await h.cycle()
            for task in tasks:
                sim.set_status(task.task_id, "FAILED")
            await h.cycle(timedelta(minutes=1))
        finally:
            store.close()
    assert len(server.messages) == 3
    assert server.rate_limited.total() == 0  # never discovered by a 429
    gaps = [b.at - a.at for a, b in zip(server.messages, server.messages[1:], strict=False)]
    assert min(gaps) >= 0.99
