"""The daemon under its own faults (issue 11): a full disk, a message that cannot be built,
a shutdown that must end in time. A real daemon (in-process, real clock) against the
simulator and the loopback Slack; the disk is a real, small tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from taskwarden.simulator.faults import Fault

from .conftest import API_KEY
from .helpers import free_port, running_daemon, until

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from taskwarden.service.daemon import Daemon
    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer

TEAM_FILE = "team: catalog\nrules:\n  - {name: failures, type: failed, severity: critical}\n"


def write_config(
    tmp_path: Path, sim: Simulator, slack: SlackServer, *, state: Path, **daemon: str
) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    (tmp_path / "teams" / "catalog.yaml").write_text(TEAM_FILE)
    settings = {
        "health_bind": f"127.0.0.1:{free_port()}",
        "deliver_interval": "0.2s",
        "shutdown_grace": "10s",
        "readiness_factor": 2,
        **daemon,
    }
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"""\
state: {{path: {state}}}
sources:
  dr: {{base_url: {sim.base_url}, interval: 1s, retry_attempts: 1}}
teams: ["teams/*.yaml"]
receivers:
  slack:
    slack: {{channel: alerts, base_url: {slack.api_url}, min_interval: 0s, timeout: 2s}}
  ops:
    slack: {{webhook_url: "{slack.webhook_url()}", min_interval: 0s, timeout: 2s}}
route:
  receiver: slack
  group_wait: 0s
  group_interval: 1s
  routes:
    - {{matchers: ['team="ops"'], receiver: ops}}
notifications:
  fallback_receiver: [ops, slack]
  backoff_initial: 0.2s
daemon: {json.dumps(settings)}
"""
    )
    return config


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch, slack: SlackServer) -> None:
    monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", API_KEY)
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", slack.token)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MiB tmpfs: a full disk is a full disk, not a mock."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the disk; returns the file to delete to free it."""
    filler = disk / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as out:
        while True:
            out.write(b"\0" * (1 << 16))
    return filler


async def readyz(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    assert daemon.health_url is not None
    async with httpx.AsyncClient(timeout=2) as client:
        answer = await client.get(f"{daemon.health_url}/readyz")
    return answer.status_code, answer.json()


@pytest.mark.slow
async def test_a_full_disk_never_resends_pauses_polling_and_tells_the_fallback(
    tmp_path: Path, sim: Simulator, slack: SlackServer, small_disk: Path, secrets: None
) -> None:
    sim.unfreeze_clock()
    config = write_config(tmp_path, sim, slack, state=small_disk / "state.db")
    async with running_daemon(config) as (daemon, _):
        await until(lambda: daemon.readiness().get("dr") == "ok")
        store = daemon.runtime.store  # type: ignore[union-attr]
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[attr-defined]
        # Slack holds its answer a moment: the disk fills between the send and its record.
        slack.inject(Fault("slow", delay=1.0, endpoint="slack.postMessage"))
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
        await slack.wait_received(1, within=10)
        filler = fill(small_disk)
        await slack.wait_for(1, within=10)
        # Sent once, its bookkeeping refused: never sent again, however many rounds pass.
        await until(lambda: daemon.runtime.sender.unrecorded == 1)  # type: ignore[union-attr]
        code, body = await readyz(daemon)
        assert code == 503
        assert "daemon:state" in body["sources"]
        assert "full" in body["sources"]["daemon:state"]
        # Polling pauses (nothing could be committed) and the fallback is told directly.
        await until(lambda: any("cannot write its state" in m.text for m in slack.messages))
        notice = next(m for m in slack.messages if "cannot write its state" in m.text)
        assert notice.via == "webhook"  # the ops receiver, first in the fallback list
        await until(lambda: "skipped" in daemon.readiness()["dr"], 10)
        await until(lambda: daemon.readiness()["dr"].startswith("last successful poll"), 10)
        assert [m.text for m in slack.in_channel("alerts")].count(slack.messages[0].text) == 1
        # Space again: the bookkeeping is written, polling resumes, the trouble resolves.
        filler.unlink()
        await until(lambda: daemon.runtime.sender.unrecorded == 0)  # type: ignore[union-attr]
        await until(lambda: daemon.readiness() == {"dr": "ok"}, 10)
        await until(lambda: any(m.text.startswith("[RESOLVED]") for m in slack.messages))
        assert (await readyz(daemon))[0] == 200
    alerts = [m for m in slack.in_channel("alerts") if "DEPLOY_PRODUCT" in m.text]
    assert len(alerts) == 1


async def test_a_message_that_cannot_be_built_is_given_up_and_the_queue_moves(
    tmp_path: Path, sim: Simulator, slack: SlackServer, secrets: None
) -> None:
    """A stored alert whose text e-mail cannot encode (a lone surrogate from before the
    boundary cleaned them) blocked its receiver for good; now it is given up at once, the
    fallback is told what was lost, and later alerts go out."""
    from taskwarden.alerts import Alert, Notification, Severity
    from taskwarden.state import open_state

    from .alerting_harness import SmtpServer

    smtp = SmtpServer(free_port())
    smtp.start()
    sim.unfreeze_clock()
    config = write_config(tmp_path, sim, slack, state=tmp_path / "state.db")
    config.write_text(
        config.read_text()
        .replace(
            "  ops:\n",
            "  mail:\n    email:\n      from: tw@example.com\n      to: [oncall@example.com]\n"
            f"      smtp: {{host: 127.0.0.1, port: {smtp.port}, tls: none}}\n  ops:\n",
        )
        .replace("  receiver: slack\n", "  receiver: mail\n")
    )
    poisoned = Alert(
        key="x", rule="failures", source="dr", severity=Severity.CRITICAL,
        labels=(("team", "catalog"),), title="DEPLOY_PRODUCT failed: task \ud800",
    )  # fmt: skip
    with open_state(tmp_path / "state.db", now=sim.now()) as store:
        store.enqueue(
            Notification("mail", "g", (), (poisoned,), firing_total=1, new_total=1), sim.now()
        )
    try:
        async with running_daemon(config) as (daemon, _):
            await until(lambda: daemon.readiness().get("dr") == "ok")
            await until(lambda: any("was given up" in m.text for m in slack.messages))
            notice = next(m for m in slack.messages if "was given up" in m.text)
            assert "UnicodeEncodeError" in notice.raw
            assert "DEPLOY_PRODUCT failed" in notice.raw  # what was lost
            sim.add_task(status="FAILED", request_type="RETIRE_PRODUCT")
            await until(lambda: len(smtp.mailbox.messages) == 1)
            assert "RETIRE_PRODUCT failed" in str(smtp.mailbox.messages[0]["Subject"])
    finally:
        smtp.stop()


async def test_shutdown_grace_is_a_hard_bound(
    tmp_path: Path, sim: Simulator, slack: SlackServer, secrets: None
) -> None:
    """Slack holds every answer for 60 s while the daemon stops: it still exits within
    ``shutdown_grace``, and the message stays in the outbox for the next start."""
    sim.unfreeze_clock()
    config = write_config(tmp_path, sim, slack, state=tmp_path / "state.db", shutdown_grace="2s")
    async with running_daemon(config) as (daemon, task):
        await until(lambda: daemon.readiness().get("dr") == "ok")
        slack.inject(Fault("slow", delay=60, remaining=100, endpoint="slack.postMessage"))
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT")
        await slack.wait_received(1, within=10)
        started = time.monotonic()
        daemon.request_stop()
        assert await asyncio.wait_for(task, timeout=30) == 0
        assert time.monotonic() - started < 2.5


async def test_the_heartbeat_pings_while_healthy_and_stops_when_polling_fails(
    tmp_path: Path,
    sim: Simulator,
    slack: SlackServer,
    secrets: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dead man's switch: an outside service (here a loopback one) hears from
    taskwarden while every source polls fine, and stops hearing when one does not."""
    from aiohttp import web

    from taskwarden.httpserver import serve_app

    pings: list[float] = []

    async def ping(_request: web.Request) -> web.Response:
        pings.append(time.monotonic())
        return web.Response(text="OK")

    app = web.Application()
    app.router.add_get("/ping/{uuid}", ping)
    async with serve_app(app, host="127.0.0.1", port=0) as base:
        monkeypatch.setenv("TASKWARDEN_HEARTBEAT__URL", f"{base}/ping/6f1c2e5a-check")
        sim.unfreeze_clock()
        config = write_config(tmp_path, sim, slack, state=tmp_path / "state.db")
        config.write_text(config.read_text() + "heartbeat: {interval: 0.3s}\n")
        async with running_daemon(config) as (daemon, _):
            await until(lambda: len(pings) >= 3)
            sim.inject(Fault("server_error", remaining=100_000, status=503))
            await until(lambda: daemon.readiness()["dr"] != "ok", within=20)
            stopped_at = len(pings)
            await asyncio.sleep(1.0)  # three heartbeat intervals: no ping may come
            assert len(pings) - stopped_at <= 1  # one may have been on its way
            sim.faults.clear()
            await until(lambda: len(pings) >= stopped_at + 3, within=20)


async def test_a_row_damaged_while_running_moves_the_state_aside_and_exits_3(
    tmp_path: Path, sim: Simulator, slack: SlackServer, secrets: None
) -> None:
    """A row that cannot be decoded is found by the daemon itself, not only at open: it
    stops, moves the file aside and exits 3, so that systemd restarts it into a fresh state
    (a crash loop on the same damaged file is what it must not do)."""
    sim.unfreeze_clock()
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
    state = tmp_path / "state.db"
    config = write_config(tmp_path, sim, slack, state=state)

    def tracked() -> bool:
        with contextlib.closing(sqlite3.connect(state, timeout=5)) as conn:
            query = "SELECT count(*) FROM tasks WHERE task_id = ?"
            return bool(conn.execute(query, (task.task_id,)).fetchone()[0])

    async with running_daemon(config) as (_daemon, run):
        await until(tracked, within=20)
        with contextlib.closing(sqlite3.connect(state, timeout=5)) as conn, conn:
            conn.execute(
                "UPDATE tasks SET products = '{not json' WHERE task_id = ?", (task.task_id,)
            )
        sim.set_status(task.task_id, "FAILED")
        assert await asyncio.wait_for(run, timeout=30) == 3
    assert moved_aside(state) == (False, 1)


def moved_aside(state: Path) -> tuple[bool, int]:
    """Whether the state file is still there, and how many copies were moved aside."""
    return state.exists(), len(list(state.parent.glob(f"{state.name}.corrupt-*")))
