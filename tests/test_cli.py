from __future__ import annotations

import asyncio
import json
import logging
import signal

import httpx
import pytest
from click.testing import CliRunner

from taskwarden import __version__
from taskwarden.cli import cli
from taskwarden.logs import configure_logging

from .helpers import TASKWARDEN, free_port, subprocess_env


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_documents_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name, command in cli.commands.items():  # type: ignore[attr-defined]
        assert name in result.output
        assert command.help, f"subcommand {name} has no help text"


def test_bad_arguments_are_rejected_clearly() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--port", "99999"])
    assert result.exit_code == 2
    assert "99999 is not in the range 0<=x<=65535" in result.output


async def test_simulate_serves_until_sigterm() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN,
        "--log-format=json",
        "simulate",
        "--port",
        str(port),
        "--tasks",
        "120",
        env=subprocess_env(),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        line = await asyncio.wait_for(proc.stderr.readline(), timeout=20)
        assert b"simulator.listening" in line
        async with httpx.AsyncClient(auth=("sim-api-key", "")) as client:
            body = (await client.get(f"http://127.0.0.1:{port}/v1/products/tasks")).json()
            stats = (await client.get(f"http://127.0.0.1:{port}/_sim/stats")).json()
        assert body["totalSize"] == 120
        assert stats["requests"] == {"dr.list": 1}
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.slow
def test_demo_runs_the_daemon_and_ends_by_itself_with_a_summary() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    assert "poll.completed" not in result.output  # the demo's alerts are not buried in logs
    slack_lines = [line for line in result.output.splitlines() if "slack #alerts <-" in line]
    texts = "\n".join(slack_lines)
    assert "[CRITICAL] FIRING: DEPLOY_PRODUCT failed" in texts
    assert "[CRITICAL] FIRING: RETIRE_PRODUCT failed" in texts
    assert "product-import failed" in texts
    assert "stuck in PROCESSING" in texts
    assert "[RESOLVED]" in texts
    assert "(in thread)" in texts
    assert "Failure burst: 27 failed tasks" in texts
    assert len(slack_lines) == 6  # 25 failures at once are one message
    assert "PRICE_MISSING" in result.output  # the console receiver shows the error details
    assert "0 left in the outbox" in result.output
    hook_lines = [line for line in result.output.splitlines() if "webhook <- firing" in line]
    assert any("failure-burst (Alertmanager payload v4)" in line for line in hook_lines)
    assert f"{len(hook_lines)} webhook payload(s) in the Alertmanager format" in result.output


def test_scheduler_chatter_stays_quiet_at_info_but_its_warnings_do_not(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json_output=True, level="info")
    executor = logging.getLogger("apscheduler.executors.default")
    executor.info('Running job "deliver outbox"')
    executor.warning('Run time of job "poll dr" was missed by 0:01:02')
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/v1/products/tasks")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ['Run time of job "poll dr" was missed by 0:01:02']
    assert lines[0]["level"] == "warning"
