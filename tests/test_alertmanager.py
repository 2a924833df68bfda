"""The Alertmanager receiver against a real Alertmanager (Debian's
``prometheus-alertmanager``, started on a loopback port; ``make test`` installs it): the
alert appears in its API with the right labels, stays firing, and resolves."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from taskwarden.alerts import Alert, AlertState, Notification, Severity, TaskFacts
from taskwarden.config import load_settings
from taskwarden.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from taskwarden.notify.alertmanager import AlertmanagerNotifier
from taskwarden.timeutil import utc_now
from taskwarden.wiring import build_alerting

from .alerting_harness import notification_of
from .helpers import free_port, until

if TYPE_CHECKING:
    from collections.abc import Iterator

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
CONFIG = """\
route: {receiver: blackhole, group_wait: 1h}
receivers: [{name: blackhole}]
"""


@pytest.fixture
def alertmanager() -> Iterator[str]:
    if BINARY is None:
        pytest.fail("prometheus-alertmanager is not installed (make test installs it)")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "am.yml").write_text(CONFIG)
        proc = subprocess.Popen(
            [
                BINARY,
                f"--config.file={tmp}/am.yml",
                f"--storage.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(until(lambda: _ready(url), within=30))
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()


async def _ready(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as client:
            return (await client.get(f"{url}/-/ready")).status_code == 200
    except httpx.HTTPError:
        return False


async def active(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{url}/api/v2/alerts", params={"active": "true"})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return [a for a in found if a["status"]["state"] == "active"]


def stuck(*, resolved: bool = False) -> Alert:
    now = utc_now()
    return Alert(
        key="stuck:dr_prod:task-1", rule="stuck", source="dr_prod", severity=Severity.WARNING,
        labels=(("team", "catalog"), ("kind", "DEPLOY_PRODUCT"), ("empty", "")),
        title="Task task-1 stuck in PROCESSING for 6h", one_shot=False,
        state=AlertState.RESOLVED if resolved else AlertState.FIRING,
        starts_at=now - timedelta(minutes=10), ends_at=now if resolved else None,
        tasks=(
            TaskFacts(
                task_id="task-1", kind="DEPLOY_PRODUCT", status="PROCESSING",
                received_time=now - timedelta(hours=6),
                uri="https://api.example/v1/products/tasks/task-1",
            ),
        ),
    )  # fmt: skip


def notification(alert: Alert) -> Notification:
    return notification_of("am", alert)


async def test_an_alert_appears_with_its_labels_stays_firing_and_resolves(
    alertmanager: str,
) -> None:
    notifier = AlertmanagerNotifier("am", alertmanager, firing_ttl=timedelta(hours=1))
    assert (await notifier.check()).startswith("Alertmanager 0.")
    await notifier.send(notification(stuck()), thread=None)
    [shown] = await active(alertmanager)
    assert shown["labels"] == {
        "alertname": "stuck", "source": "dr_prod", "severity": "warning",
        "team": "catalog", "kind": "DEPLOY_PRODUCT",
    }  # fmt: skip
    assert shown["annotations"]["summary"] == "Task task-1 stuck in PROCESSING for 6h"
    assert shown["generatorURL"] == "https://api.example/v1/products/tasks/task-1"
    ends = shown["endsAt"]
    await notifier.send(notification(stuck()), thread=None)  # a repeat: the same alert, later end
    [again] = await active(alertmanager)
    assert again["fingerprint"] == shown["fingerprint"]
    assert again["endsAt"] >= ends
    await notifier.send(notification(stuck(resolved=True)), thread=None)

    async def gone() -> bool:
        return await active(alertmanager) == []

    await until(gone, within=10)


async def test_refusals_and_outages(alertmanager: str) -> None:
    bad = replace(stuck(), labels=(("bad-name", "x"),))
    with pytest.raises(PermanentDeliveryError, match="Alertmanager answered 400"):
        await AlertmanagerNotifier("am", alertmanager).send(notification(bad), thread=None)
    down = AlertmanagerNotifier("am", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientDeliveryError, match="Alertmanager unreachable"):
        await down.send(notification(stuck()), thread=None)


def test_a_route_that_repeats_slower_than_the_ttl_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "receivers:\n  am:\n    alertmanager: {url: 'http://127.0.0.1:9093', firing_ttl: 1h}\n"
        "  ops: {console: true}\n"
        "route:\n  receiver: ops\n  routes:\n    - {receiver: am, matchers: ['team=\"catalog\"']}\n"
    )
    settings = load_settings(config)
    with pytest.raises(ConfigError, match=r"route 0\.0 sends to receiver 'am'.*every 4:00:00"):
        build_alerting(settings, config)
