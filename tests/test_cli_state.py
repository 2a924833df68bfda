"""`taskwarden once` and `taskwarden state` end to end, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TYPE_CHECKING

from taskwarden.simulator import Simulator, running_simulator

from .helpers import TASKWARDEN, subprocess_env

if TYPE_CHECKING:
    from pathlib import Path

KEY = "cli-test-key-0001"


async def taskwarden(*args: str, key: str = KEY, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN,
        "--log-format=json",
        *args,
        env=subprocess_env(TASKWARDEN_SOURCES__DR__API_KEY=key, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def config_for(tmp_path: Path, base_url: str, *, team: str | None = None, rest: str = "") -> Path:
    """A configuration that polls the simulator at ``base_url``; ``team``: one team file."""
    if team is not None:
        (tmp_path / "teams").mkdir()
        (tmp_path / "teams" / "catalog.yaml").write_text(team)
        rest = "teams: ['teams/*.yaml']\n" + rest
    config = tmp_path / "c.yaml"
    config.write_text(
        f"state:\n  path: {tmp_path / 's.db'}\nsources:\n  dr:\n    base_url: {base_url}\n{rest}"
    )
    return config


async def test_once_then_state(tmp_path: Path) -> None:
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim) as running:
        config = config_for(tmp_path, running.base_url)
        stuck = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
        sim.add_task(status="COMPLETED")
        code, _, err = await taskwarden("once", "-c", str(config))
        assert code == 0, err
        assert KEY not in err

        code, dry, _ = await taskwarden("once", "-c", str(config), "--dry-run")
        assert code == 0
        assert f"StillOpen {stuck.task_id} PROCESSING" in dry

        code, out, _ = await taskwarden("state", "-c", str(config), "--json")
        assert code == 0
        state = json.loads(out)
        (dr,) = state["sources"]
        assert dr["tasksByStatus"] == {"COMPLETED": 1, "PROCESSING": 1}
        assert [t["taskId"] for t in dr["openTasks"]] == [stuck.task_id]
        assert dr["checkpoint"] is not None

        code, text, _ = await taskwarden("state", "-c", str(config))
        assert f"open {stuck.task_id} PROCESSING" in text

        code, _, err = await taskwarden("once", "-c", str(config), key="wrong-key-9999")
        assert code == 1
        assert "poll.failed" in err
        assert "HTTP 401" in err
        assert "wrong-key-9999" not in err


async def test_configuration_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("sources:\n  dr:\n    interval: often\n")
    code, _, err = await taskwarden("once", "-c", str(config))
    assert code == 2
    assert "sources.dr.interval" in err


MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    sys.exit(f"PR_SET_MDWE: {os.strerror(ctypes.get_errno())}")
os.execv(sys.executable, [sys.executable, "-m", "taskwarden", *sys.argv[1:]])
"""


async def test_a_cycle_needs_no_writable_executable_memory(tmp_path: Path) -> None:
    """The systemd unit sets MemoryDenyWriteExecute=yes: a poll that alerts, renders its
    templates, matches with RE2 and notifies runs with the kernel refusing W+X memory."""
    team = (
        "team: catalog\nrules:\n  - name: deploys\n    type: failed\n"
        "    matchers: ['kind=~\"DEPLOY_.*\"']\n"
        "    annotations: {summary: '{{ task.kind }} of {{ task.erid }} failed'}\n"
    )
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim) as running:
        config = config_for(
            tmp_path,
            running.base_url,
            team=team,
            rest="receivers: {out: {console: true}}\nroute: {receiver: out}\n",
        )
        task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
        code, _, err = await taskwarden("once", "-c", str(config))
        assert code == 0, err
        sim.set_status(task.task_id, "FAILED")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", MDWE, "--log-format=json", "once", "-c", str(config),
            env=subprocess_env(TASKWARDEN_SOURCES__DR__API_KEY=KEY),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err_bytes = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err_bytes.decode()
        assert "DEPLOY_PRODUCT of" in out.decode()  # the alert, through its template


async def test_a_dry_run_needs_the_sources_keys_but_no_receivers_secrets(tmp_path: Path) -> None:
    """It sends nothing, so it shows the routing without the Slack token, the PagerDuty key
    or the heartbeat URL; the real run still wants them."""
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim) as running:
        config = config_for(
            tmp_path,
            running.base_url,
            team="team: catalog\nrules:\n  - {name: deploys, type: failed}\n",
            rest="receivers:\n  chat: {slack: {channel: alerts}}\n  pd: {pagerduty: {}}\n"
            "route:\n  receiver: chat\n  group_wait: 0s\n"
            "  routes: [{matchers: ['severity=\"critical\"'], receiver: pd}]\n"
            "heartbeat: {interval: 1m}\n",
        )
        task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
        code, _, err = await taskwarden("once", "-c", str(config), "--dry-run")
        assert code == 0, err
        assert not (tmp_path / "s.db").exists()
        code, _, err = await taskwarden("once", "-c", str(config))
        assert code == 2
        assert "TASKWARDEN_RECEIVERS__PD__PAGERDUTY__ROUTING_KEY" in err
        secrets = {  # the daemon's own environment: its first cycle records the baseline
            "TASKWARDEN_RECEIVERS__CHAT__SLACK__TOKEN": "xoxb-unused",
            "TASKWARDEN_RECEIVERS__PD__PAGERDUTY__ROUTING_KEY": "unused",
            "TASKWARDEN_HEARTBEAT__URL": "https://hc.example/unused",
        }
        code, _, err = await taskwarden("once", "-c", str(config), **secrets)
        assert code == 0, err
        sim.set_status(task.task_id, "FAILED")
        code, dry, err = await taskwarden("once", "-c", str(config), "--dry-run")
        assert code == 0, err
        assert "--- would send to chat ---" in dry
        assert "DEPLOY_PRODUCT failed" in dry
