"""`taskwarden once` and `taskwarden state` end to end, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from taskwarden.simulator import Simulator, running_simulator

from .helpers import TASKWARDEN, subprocess_env

if TYPE_CHECKING:
    from pathlib import Path

KEY = "cli-test-key-0001"


async def taskwarden(*args: str, key: str = KEY) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *TASKWARDEN,
        "--log-format=json",
        *args,
        env=subprocess_env(TASKWARDEN_SOURCES__DR__API_KEY=key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_once_then_state(tmp_path: Path) -> None:
    sim = Simulator(api_key=KEY)
    async with running_simulator(sim) as running:
        config = tmp_path / "c.yaml"
        config.write_text(
            f"state:\n  path: {tmp_path / 's.db'}\n"
            f"sources:\n  dr:\n    base_url: {running.base_url}\n"
        )
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
