"""The generic webhook receiver against a real HTTP server on loopback: the Alertmanager
payload (version 4) as its consumers read it, signatures, and what each answer means for
the outbox (accepted, rate-limited, refused, down)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from taskwarden.alerts import Alert, AlertState, Notification, Severity, TaskFacts
from taskwarden.config import load_settings
from taskwarden.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from taskwarden.model import Problem
from taskwarden.notify.webhook import WebhookNotifier
from taskwarden.outbox import DeliverySettings, OutboxSender
from taskwarden.state import open_state
from taskwarden.wiring import build_receivers, settings_secrets

from .alerting_harness import notification_of
from .conftest import T0
from .helpers import free_port, serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

SECRET = "hmac-secret-0123456789"
TOKEN = "bearer-token-abcdef"


@dataclass
class Hook:
    """A webhook consumer on loopback: records every request, answers from a script."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers, text="nope" if status >= 300 else "")

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    recorder = Hook()
    app = web.Application()
    app.router.add_post("/hook/{token}", recorder.handle)
    async with serving(app) as base:
        recorder.url = f"{base}/hook/t0ken"
        yield recorder


def failed(key: str, *, resolved: bool = False) -> Alert:
    return Alert(
        key=key, rule="failed-deploys", source="dr_prod", severity=Severity.CRITICAL,
        labels=(("team", "catalog"), ("kind", "DEPLOY_PRODUCT")), title=f"Deploy {key} failed",
        state=AlertState.RESOLVED if resolved else AlertState.FIRING,
        starts_at=T0, ends_at=T0 + timedelta(minutes=5) if resolved else None,
        tasks=(
            TaskFacts(
                task_id=f"task-{key}", kind="DEPLOY_PRODUCT", status="FAILED", received_time=T0,
                uri=f"https://api.example/v1/products/tasks/task-{key}",
                errors=(Problem("E42", 'price "<b>" is not a number'),),
            ),
        ),
    )  # fmt: skip


def notification(*alerts: Alert) -> Notification:
    return notification_of("hook", *alerts)


async def test_the_payload_is_alertmanagers_version_4_signed_and_authorized(hook: Hook) -> None:
    notifier = WebhookNotifier(
        "hook", hook.url, bearer_token=TOKEN, hmac_secret=SECRET,
        headers={"X-Team": "catalog"}, external_url="https://taskwarden.example",
    )  # fmt: skip
    await notifier.send(
        notification(failed("a"), failed("b"), failed("c", resolved=True)), thread=None
    )
    [(headers, body)] = hook.received
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["X-Team"] == "catalog"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Taskwarden-Signature"] == expected
    sent = json.loads(body)
    assert {k: sent[k] for k in ("version", "status", "receiver", "groupKey", "truncatedAlerts")} == {
        "version": "4", "status": "firing", "receiver": "hook", "groupKey": "hook|catalog",
        "truncatedAlerts": 0,
    }  # fmt: skip
    assert sent["groupLabels"] == {"team": "catalog"}
    assert sent["externalURL"] == "https://taskwarden.example"
    assert sent["commonLabels"] == {
        "alertname": "failed-deploys", "source": "dr_prod", "severity": "critical",
        "team": "catalog", "kind": "DEPLOY_PRODUCT",
    }  # fmt: skip
    first, _, done = sent["alerts"]
    assert first["status"] == "firing"
    assert first["startsAt"] == "2026-03-01T12:00:00.000Z"
    assert first["endsAt"] == "0001-01-01T00:00:00Z"
    assert first["generatorURL"] == "https://api.example/v1/products/tasks/task-a"
    assert len(first["fingerprint"]) == 16
    assert first["annotations"] == {
        "summary": "Deploy a failed",
        "task_ids": "task-a",
        "errors": 'E42: price "<b>" is not a number',  # vendor text: a JSON string, inert
    }
    assert done["status"] == "resolved"
    assert done["endsAt"] == "2026-03-01T12:05:00.000Z"


async def test_max_alerts_truncates_and_counts_the_rest(hook: Hook) -> None:
    notifier = WebhookNotifier("hook", hook.url, max_alerts=2)
    many = notification(*(failed(str(i)) for i in range(5)))
    await notifier.send(many, thread=None)
    [sent] = hook.bodies()
    assert len(sent["alerts"]) == 2
    assert sent["truncatedAlerts"] == 3


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "7"}, TransientDeliveryError, 7.0),
        (503, {}, TransientDeliveryError, None),
        (408, {}, TransientDeliveryError, None),
        (400, {}, PermanentDeliveryError, None),
        (404, {}, PermanentDeliveryError, None),
    ],
)
async def test_each_answer_is_retried_or_given_up_as_documented(
    hook: Hook,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    hook.answers.append((status, headers))
    with pytest.raises(error, match=f"webhook answered {status}: nope") as caught:
        await WebhookNotifier("hook", hook.url).send(notification(failed("a")), thread=None)
    assert getattr(caught.value, "retry_after", None) == retry_after


async def test_a_server_that_is_down_is_retried_later() -> None:
    down = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(TransientDeliveryError, match="webhook unreachable: ConnectError"):
        await WebhookNotifier("hook", down, timeout=2).send(notification(failed("a")), thread=None)


def config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "taskwarden.yaml"
    path.write_text(body)
    return path


async def test_configured_from_yaml_and_secrets_through_the_outbox(
    tmp_path: Path, hook: Hook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From YAML plus secrets (the URL and the HMAC key, both known to the redactor): a rate
    limit holds the queue, then both entries are delivered, in order."""
    path = config(
        tmp_path,
        "receivers:\n  hook:\n    webhook: {max_alerts: 10, headers: {X-Team: catalog}}\n"
        "route: {receiver: hook}\n",
    )
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__HOOK__WEBHOOK__URL", hook.url)
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__HOOK__WEBHOOK__HMAC_SECRET", SECRET)
    settings = load_settings(path)
    assert {hook.url, SECRET} <= set(settings_secrets(settings))
    store = open_state(tmp_path / "state.db", now=T0)
    store.enqueue(notification(failed("a")), T0)
    store.enqueue(notification(failed("b")), T0)
    hook.answers.append((429, {"Retry-After": "1"}))
    now = [T0]
    sender = OutboxSender(
        store, build_receivers(settings), DeliverySettings(), clock=lambda: now[0]
    )
    first = await sender.deliver_due()
    assert sum(first.retried.values()) == 1
    assert [b["alerts"][0]["labels"]["alertname"] for b in hook.bodies()] == ["failed-deploys"]
    now[0] = T0 + timedelta(seconds=2)
    second = await sender.deliver_due()
    assert second.total_sent == 2
    titles = [b["alerts"][0]["annotations"]["summary"] for b in hook.bodies()]
    assert titles == ["Deploy a failed", "Deploy a failed", "Deploy b failed"]  # order kept
    store.close()


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        ("{url: 'http://hooks.example/x'}", "must be an https:// URL"),
        ("{url: 'https://hooks.example/x', headers: {Authorization: x}}", "cannot be set here"),
        ("{url: 'https://hooks.example/x', max_alerts: -1}", "greater than or equal to 0"),
    ],
)
def test_bad_webhook_settings_name_the_key(tmp_path: Path, webhook: str, message: str) -> None:
    path = config(
        tmp_path, f"receivers:\n  hook:\n    webhook: {webhook}\nroute: {{receiver: hook}}\n"
    )
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(path)
    assert "receivers.hook.webhook" in str(caught.value)
    assert "hooks.example" not in str(caught.value)  # the URL is a secret


async def test_test_notify_posts_to_the_webhook_and_check_says_what_it_cannot_verify(
    tmp_path: Path, hook: Hook
) -> None:
    from click.testing import CliRunner

    from taskwarden.cli import cli

    path = config(
        tmp_path,
        "sources:\n  dr: {base_url: 'http://127.0.0.1:9'}\n"
        "receivers:\n  hook:\n    webhook: {}\nroute: {receiver: hook}\n",
    )
    env = {
        "TASKWARDEN_RECEIVERS__HOOK__WEBHOOK__URL": hook.url,
        "TASKWARDEN_SOURCES__DR__API_KEY": "k",
    }

    def invoke(*args: str) -> Any:  # in a thread: the hook answers on this test's loop
        return CliRunner().invoke(cli, [*args, "-c", str(path)], env=env)

    sent = await asyncio.to_thread(invoke, "test-notify", "hook")
    assert sent.exit_code == 0, sent.output
    [body] = hook.bodies()
    assert body["receiver"] == "hook"
    assert body["status"] == "firing"
    checked = await asyncio.to_thread(invoke, "check", "--connect")
    assert "a webhook can only be verified by posting: use test-notify" in checked.output
    assert "t0ken" not in sent.output + checked.output  # the URL is a secret
