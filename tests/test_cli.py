from __future__ import annotations

import asyncio
import signal

import httpx
from click.testing import CliRunner

from taskwarden import __version__
from taskwarden.cli import cli

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


def test_demo_runs_the_scenario_and_ends_by_itself() -> None:
    result = CliRunner().invoke(cli, ["--log-level", "warning", "demo", "--cycles", "4"])
    assert result.exit_code == 0, result.output
    assert result.output.count("-> FAILED  <-- would alert") == 2
    assert "done: 4 cycles" in result.output
