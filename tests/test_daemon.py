"""``taskwarden run`` and ``check``: a real daemon against the simulator, a loopback Slack
and aiosmtpd; signals, reload, health, readiness, metrics, secret redaction."""

from __future__ import annotations

import asyncio
import platform
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from click.testing import CliRunner

from taskwarden.cli import cli
from taskwarden.config import config_loader
from taskwarden.service.daemon import Daemon
from taskwarden.simulator.faults import Fault
from taskwarden.state import open_state

from .alerting_harness import SmtpServer
from .conftest import API_KEY
from .helpers import TASKWARDEN, free_port, running_daemon, subprocess_env, until

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer

SMTP_PASSWORD = "smtp-pa55word-xyz"

TEAM_FILE = """\
team: catalog
rules:
  - {name: failures, type: failed, severity: critical}
"""


def write_config(
    tmp_path: Path,
    sim: Simulator,
    slack: SlackServer,
    *,
    smtp_port: int,
    health_port: int,
    route_to: str,
) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    (tmp_path / "teams" / "catalog.yaml").write_text(TEAM_FILE)
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"""\
state: {{path: {tmp_path / "state.db"}}}
sources:
  dr: {{base_url: {sim.base_url}, interval: 1s, retry_attempts: 1}}
teams: ["teams/*.yaml"]
receivers:
  slack:
    slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0s}}
  mail:
    email:
      from: taskwarden@example.com
      to: [oncall@example.com]
      smtp: {{host: 127.0.0.1, port: {smtp_port}, tls: none}}
route:
  receiver: {route_to}
  group_wait: 0s
  group_interval: 1s
daemon:
  health_bind: 127.0.0.1:{health_port}
  readiness_factor: 2
  deliver_interval: 0.2s
  shutdown_grace: 10s
notifications:
  backoff_initial: 0.2s
"""
    )
    return config


def slack_daemon(
    tmp_path: Path,
    sim: Simulator,
    slack: SlackServer,
    monkeypatch: pytest.MonkeyPatch,
    health_port: int,
) -> Path:
    """The configuration of an in-process daemon that routes to the loopback Slack, with
    its secrets in the environment."""
    config = write_config(
        tmp_path, sim, slack, smtp_port=free_port(), health_port=health_port, route_to="slack"
    )
    monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", API_KEY)
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", slack.token)
    return config


def env(slack: SlackServer) -> dict[str, str]:
    return subprocess_env(
        TASKWARDEN_SOURCES__DR__API_KEY=API_KEY,
        TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN=slack.token,
        TASKWARDEN_RECEIVERS__MAIL__EMAIL__SMTP__PASSWORD=SMTP_PASSWORD,
    )


async def status(url: str) -> int:
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            return (await client.get(url)).status_code
        except httpx.TransportError:
            return 0


@pytest.mark.slow
async def test_run_alerts_reloads_on_sighup_and_drains_on_sigterm(
    tmp_path: Path, sim: Simulator, slack: SlackServer
) -> None:
    sim.unfreeze_clock()
    smtp = SmtpServer(free_port())
    smtp.start()
    health = free_port()
    config = write_config(
        tmp_path, sim, slack, smtp_port=smtp.port, health_port=health, route_to="slack"
    )
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN, "--log-format=json", "--log-level=debug", "run", "-c", str(config),
        env=env(slack), stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stderr = bytearray()

    async def pump() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            stderr.extend(line)

    reader = asyncio.create_task(pump())
    try:

        async def ready() -> bool:
            return await status(f"http://127.0.0.1:{health}/readyz") == 200

        await until(ready)
        assert await status(f"http://127.0.0.1:{health}/healthz") == 200
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
        await slack.wait_for(1, within=20)
        assert "DEPLOY_PRODUCT failed" in slack.messages[0].text
        # SIGHUP with a changed route: failures now go by e-mail.
        write_config(tmp_path, sim, slack, smtp_port=smtp.port, health_port=health, route_to="mail")
        proc.send_signal(signal.SIGHUP)
        await until(lambda: b"config.reloaded" in stderr)
        sim.add_task(status="FAILED", request_type="RETIRE_PRODUCT")
        await until(lambda: len(smtp.mailbox.messages) == 1)
        assert "RETIRE_PRODUCT failed" in str(smtp.mailbox.messages[0]["Subject"])
        assert len(slack.messages) == 1
        # An invalid configuration is rejected; the running one stays.
        config.write_text(config.read_text().replace("interval: 1s", "interval: whenever"))
        proc.send_signal(signal.SIGHUP)
        await until(lambda: b"config.reload_rejected" in stderr)
        assert b"whenever" in stderr
        # SIGTERM: clean exit with an empty outbox, even with a delivery in flight.
        smtp.stop()
        sim.add_task(status="FAILED", request_type="UPDATE_PRODUCT")
        await until(lambda: b"delivery.retry_scheduled" in stderr)
        smtp.start()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        await reader
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        smtp.stop()
    assert b"daemon.stopped" in stderr
    assert len(smtp.mailbox.messages) == 2
    store = open_state(tmp_path / "state.db", now=sim.now())
    try:
        assert store.outbox_depth() == (0, None)
    finally:
        store.close()
    for secret in (API_KEY, slack.token, SMTP_PASSWORD):
        assert secret.encode() not in stderr


async def test_health_readiness_and_metrics(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.unfreeze_clock()
    health = free_port()
    config = slack_daemon(tmp_path, sim, slack, monkeypatch, health)
    daemon = Daemon(config_loader(config), handle_signals=False)
    running = asyncio.create_task(daemon.run())
    base = f"http://127.0.0.1:{health}"
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=20)
        assert await status(f"{base}/healthz") == 200
        await until(lambda: daemon.readiness() == {"dr": "ok"})
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
        await slack.wait_for(1, within=20)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{base}/metrics")).text
            ready = await client.get(f"{base}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "sources": {"dr": "ok"}}
        for line in (
            'taskwarden_polls_total{outcome="ok",source="dr"}',
            'taskwarden_api_calls_total{endpoint="list",source="dr",status="200"}',
            'taskwarden_notifications_total{receiver="slack",result="sent"} 1.0',
            'taskwarden_alerts_total{change="fired",source="dr"} 1.0',
            'taskwarden_tasks{source="dr",status="FAILED"} 1.0',
            "taskwarden_outbox_depth 0.0",
            "taskwarden_outbox_oldest_age_seconds 0.0",
            'taskwarden_last_successful_poll_timestamp_seconds{source="dr"}',
            "taskwarden_poll_duration_seconds_bucket",
        ):
            assert line in text, line
        # The API goes down: unready once the last success is older than 2 intervals.
        sim.inject(Fault("server_error", remaining=100_000, status=503))
        await until(lambda: daemon.readiness()["dr"].startswith("last successful poll"))
        async with httpx.AsyncClient() as client:
            unready = await client.get(f"{base}/readyz")
        assert unready.status_code == 503
        assert unready.json()["ready"] is False
        assert await status(f"{base}/healthz") == 200  # alive, just not ready
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"{base}/metrics")).text
        assert 'taskwarden_polls_total{outcome="failed",source="dr"}' in text
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, timeout=20) == 0
    assert await status(f"{base}/healthz") == 0  # the endpoint closed with the daemon


async def test_check_validates_and_connects(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskwarden.cli.check import run_check
    from taskwarden.cli.common import Output
    from taskwarden.logs import Redactor

    smtp = SmtpServer(free_port())
    smtp.start()
    try:
        config = write_config(
            tmp_path, sim, slack, smtp_port=smtp.port, health_port=free_port(), route_to="slack"
        )
        monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", API_KEY)
        monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", slack.token)
        assert await run_check(config, Output(Redactor()), connect=True) == 0
        monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", "xoxb-wrong")
        assert await run_check(config, Output(Redactor()), connect=True) == 1
    finally:
        smtp.stop()


def test_check_cli_reports_every_error_with_lines(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "sources:\n  dr:\n    interval: soon\nroute:\n  receiver: nowhere\n"
        "daemon:\n  health_bind: everywhere\n"
    )
    result = CliRunner().invoke(cli, ["check", "-c", str(config)])
    assert result.exit_code == 2
    assert "sources.dr.interval (line 3)" in result.output
    assert "daemon.health_bind (line 7)" in result.output


def test_check_cli_passes_the_example(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "SOURCES__DR_PROD__API_KEY": "k",
        "SOURCES__EP_STORE__CLIENT_SECRET": "s",
        "RECEIVERS__CATALOG_SLACK__SLACK__TOKEN": "xoxb-1",
        "RECEIVERS__PRICING_SLACK__SLACK__WEBHOOK_URL": "https://hooks.example/1",
    }.items():
        monkeypatch.setenv(f"TASKWARDEN_{key}", value)
    example = Path(__file__).parents[1] / "config" / "taskwarden.example.yaml"
    result = CliRunner().invoke(cli, ["check", "-c", str(example)])
    assert result.exit_code == 0, result.output
    assert "2 source(s), 2 team(s), 6 rule(s)" in result.output
    assert "warn" not in result.output


def test_check_warns_when_no_rule_would_alert(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "sources:\n  dr: {}\nreceivers:\n  out: {console: true}\nroute: {receiver: out}\n"
    )
    result = CliRunner().invoke(
        cli, ["check", "-c", str(config)], env={"TASKWARDEN_SOURCES__DR__API_KEY": "k"}
    )
    assert result.exit_code == 0, result.output
    assert "warn no team rules: only source-health alerts will be sent" in result.output


def open_descriptors(pid: int) -> int:
    return sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())


@pytest.mark.slow
async def test_idle_connections_cannot_exhaust_the_daemon(
    tmp_path: Path, sim: Simulator, slack: SlackServer
) -> None:
    """1,100 idle connections to the health port (exposed in the image) exhausted file
    descriptors and stopped Slack delivery. Now the oldest is closed when there are too
    many: the daemon's descriptors stay bounded, probes get in, delivery goes on."""
    sim.unfreeze_clock()
    health = free_port()
    config = write_config(
        tmp_path, sim, slack, smtp_port=free_port(), health_port=health, route_to="slack"
    )
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN, "--log-format=json", "run", "-c", str(config),
        env=env(slack), stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    idle: list[asyncio.StreamWriter] = []
    try:
        await until(lambda: status(f"http://127.0.0.1:{health}/healthz"), within=20)
        for _ in range(1_100):
            _, writer = await asyncio.open_connection("127.0.0.1", health)
            idle.append(writer)
        # The daemon accepts them all, closing the oldest beyond its limit: bounded soon.
        await until(lambda: open_descriptors(proc.pid) < 150, within=10)
        assert await status(f"http://127.0.0.1:{health}/healthz") == 200
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
        await slack.wait_for(1, within=20)
        assert open_descriptors(proc.pid) < 150
    finally:
        for writer in idle:
            writer.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


def counter(metrics: str, line: str) -> float:
    """The value of one sample in a /metrics text (0 when absent)."""
    for row in metrics.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    return 0.0


async def test_counters_survive_a_reload(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API call counters lived in the sources a reload rebuilds: they fell back to 0."""
    sim.unfreeze_clock()
    health = free_port()
    config = slack_daemon(tmp_path, sim, slack, monkeypatch, health)
    sample = 'taskwarden_api_calls_total{endpoint="list",source="dr",status="200"}'
    async with running_daemon(config) as (daemon, running), httpx.AsyncClient() as client:

        async def calls() -> float:
            return counter((await client.get(f"http://127.0.0.1:{health}/metrics")).text, sample)

        await until(lambda: calls_at_least(calls, 3))
        before = await calls()
        assert await daemon.reload()
        assert await calls() >= before
    assert running.result() == 0


async def test_reload_outcomes_and_the_build_are_metrics(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a PrometheusRule alerts on: a rejected reload, and which build runs."""
    from taskwarden import __version__

    health = free_port()
    config = slack_daemon(tmp_path, sim, slack, monkeypatch, health)
    good = config.read_text()
    async with running_daemon(config) as (daemon, running), httpx.AsyncClient() as client:

        async def sample(line: str) -> float:
            text = (await client.get(f"http://127.0.0.1:{health}/metrics")).text
            return counter(text, line)

        ok = "taskwarden_config_last_reload_successful"
        at = "taskwarden_config_last_reload_success_timestamp_seconds"
        assert await sample(ok) == 1
        started = await sample(at)
        assert started > 0
        build = (
            f'taskwarden_build_info{{python="{platform.python_version()}",version="{__version__}"}}'
        )
        assert await sample(build) == 1
        config.write_text(good + "nonsense: [\n")
        assert not await daemon.reload()
        assert await sample(ok) == 0
        assert await sample(at) == started
        config.write_text(good)
        assert await daemon.reload()
        assert await sample(ok) == 1
        assert await sample(at) >= started
    assert running.result() == 0


async def calls_at_least(read: Callable[[], Awaitable[float]], floor: float) -> bool:
    return await read() >= floor


async def test_a_changed_team_file_is_reloaded_without_sighup(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ConfigMap edit reaches the mounted files and nothing signals the process: the
    daemon notices the new contents; a broken edit is rejected once, not at every look."""
    config = slack_daemon(tmp_path, sim, slack, monkeypatch, free_port())
    config.write_text(config.read_text().replace("daemon:\n", "daemon:\n  watch_config: 0.1s\n"))
    team_file = tmp_path / "teams" / "catalog.yaml"
    async with running_daemon(config) as (daemon, running):
        assert daemon.runtime is not None
        runtime = daemon.runtime
        loads = 0
        looks = 0
        load, look = daemon._load, daemon._config_fingerprint

        def counted_load() -> Any:
            nonlocal loads
            loads += 1
            return load()

        def counted_look(rt: Any) -> str | None:
            nonlocal looks
            looks += 1
            return look(rt)

        daemon._load, daemon._config_fingerprint = counted_load, counted_look  # type: ignore[method-assign]
        team_file.write_text(TEAM_FILE + "  - {name: stuck, type: stuck, after: 2h}\n")
        await until(lambda: len(runtime.alerting.teams[0].rules) == 2)
        assert loads == 1
        team_file.write_text("team: catalog\nrules: [nonsense\n")
        await until(lambda: loads == 2)
        seen = looks
        await until(lambda: looks >= seen + 5)  # five more looks at the same broken files
        assert loads == 2
        assert len(runtime.alerting.teams[0].rules) == 2  # the running configuration stays
    assert running.result() == 0
