"""The Microsoft Teams receiver against a loopback Workflows webhook that checks what a
Workflows trigger takes (a message with one Adaptive Card attachment) and answers 202; the
card shows the alerts with vendor text inert; 429 / 5xx / 400 / down as the outbox expects."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from taskwarden.alerts import Alert, AlertState, Notification, Severity, TaskFacts
from taskwarden.errors import PermanentDeliveryError, TransientDeliveryError
from taskwarden.model import Problem, Product
from taskwarden.notify.teams import MAX_ALERTS, TeamsNotifier, inert

from .alerting_harness import notification_of
from .conftest import T0
from .helpers import free_port, serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


@dataclass
class Workflows:
    cards: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    async def trigger(self, request: web.Request) -> web.Response:
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"error": {"code": "x"}}, status=status, headers=headers)
        message = await request.json()
        attachments = message.get("attachments") if isinstance(message, dict) else None
        if (
            message.get("type") != "message"
            or not isinstance(attachments, list)
            or len(attachments) != 1
            or attachments[0].get("contentType") != "application/vnd.microsoft.card.adaptive"
            or attachments[0]["content"].get("type") != "AdaptiveCard"
        ):
            return web.json_response({"error": {"code": "InvalidRequestContent"}}, status=400)
        self.cards.append(attachments[0]["content"])
        return web.Response(status=202)


@pytest.fixture
async def workflows() -> AsyncIterator[Workflows]:
    server = Workflows()
    app = web.Application()
    app.router.add_post("/workflows/{id}/triggers/manual/paths/invoke", server.trigger)
    async with serving(app) as base:
        server.url = f"{base}/workflows/w1/triggers/manual/paths/invoke?sig=s3cr3t"
        yield server


def alert(key: str, erid: str = "SKU-1") -> Alert:
    return Alert(
        key=key, rule="failed-deploys", source="dr_prod", severity=Severity.CRITICAL,
        labels=(("team", "catalog"),), title=f"Deploy of {erid} failed",
        state=AlertState.FIRING, starts_at=T0,
        tasks=(
            TaskFacts(
                task_id=f"task-{key}", kind="DEPLOY_PRODUCT", status="FAILED", received_time=T0,
                products=(Product("p1", erid, "PHYSICAL"),),
                uri=f"https://api.example/v1/products/tasks/task-{key}",
                errors=(Problem("E42", "price is *not* a number"),),
            ),
        ),
    )  # fmt: skip


def notification(*alerts: Alert) -> Notification:
    return notification_of("teams", *alerts)


def texts(card: dict[str, Any]) -> list[str]:
    out = []
    for block in card["body"]:
        if block["type"] == "TextBlock":
            out.append(block["text"])
        elif block["type"] == "FactSet":
            out += [f"{f['title']}={f['value']}" for f in block["facts"]]
    return out


async def test_a_card_shows_each_alert_and_links_its_tasks(workflows: Workflows) -> None:
    await TeamsNotifier("teams", workflows.url).send(notification(alert("a")), thread=None)
    [card] = workflows.cards
    shown = texts(card)
    assert shown[0] == r"\[CRITICAL\] FIRING: 1 alert — team=catalog"
    assert r"CRITICAL: Deploy of SKU\-1 failed" in shown
    assert r"task\-a=DEPLOY\_PRODUCT FAILED \(SKU\-1\)" in shown
    assert r"E42=price is \*not\* a number" in shown
    assert card["actions"] == [
        {
            "type": "Action.OpenUrl",
            "title": "task task-a",
            "url": "https://api.example/v1/products/tasks/task-a",
        }
    ]


async def test_vendor_markdown_stays_inert_and_large_groups_are_counted(
    workflows: Workflows,
) -> None:
    hostile = "[click](https://evil.example) **boom** <at>everyone</at>"
    many = [alert(str(i), erid=hostile) for i in range(MAX_ALERTS + 3)]
    await TeamsNotifier("teams", workflows.url).send(notification(*many), thread=None)
    [card] = workflows.cards
    joined = "\n".join(texts(card))
    assert "](https" not in joined  # no link can form: every bracket is escaped
    assert "**" not in joined
    assert "<at>" not in joined
    assert texts(card)[-1] == "… and 3 more"
    # every Markdown character in a shown text is escaped
    assert not re.search(r"(?<!\\)[*_\[\]]", inert(hostile))


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, TransientDeliveryError), (502, TransientDeliveryError), (400, PermanentDeliveryError)],
)
async def test_answers(workflows: Workflows, status: int, error: type[Exception]) -> None:
    workflows.script.append((status, {"Retry-After": "3"}))
    with pytest.raises(error, match=f"Teams answered {status}"):
        await TeamsNotifier("teams", workflows.url).send(notification(alert("a")), thread=None)


async def test_down_is_retried_and_the_url_never_shown(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/workflows/w1/triggers/manual/paths/invoke?sig=s3cr3t"
    with pytest.raises(TransientDeliveryError, match="Teams unreachable") as caught:
        await TeamsNotifier("teams", url, timeout=2).send(notification(alert("a")), thread=None)
    assert "s3cr3t" not in str(caught.value)


async def test_test_notify_through_the_command_line(tmp_path: Path, workflows: Workflows) -> None:
    from click.testing import CliRunner

    from taskwarden.cli import cli

    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "sources:\n  dr: {base_url: 'http://127.0.0.1:9'}\n"
        "receivers:\n  teams:\n    teams: {}\nroute: {receiver: teams}\n"
    )
    env = {
        "TASKWARDEN_RECEIVERS__TEAMS__TEAMS__URL": workflows.url,
        "TASKWARDEN_SOURCES__DR__API_KEY": "k",
    }
    result = await asyncio.to_thread(
        lambda: CliRunner().invoke(cli, ["test-notify", "-c", str(config), "teams"], env=env)
    )
    assert result.exit_code == 0, result.output
    [card] = workflows.cards
    assert texts(card)[0] == "taskwarden test notification: this receiver works"
    assert "s3cr3t" not in result.output
