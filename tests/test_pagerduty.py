"""The PagerDuty receiver against a loopback server that implements the documented Events
API v2 (validation, 202 / 400 / 429, de-duplication by ``dedup_key``): incidents open,
repeat without duplicating, resolve; refusals and outages as the outbox expects them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from taskwarden.alerts import Alert, AlertState, Notification, Severity, TaskFacts
from taskwarden.errors import PermanentDeliveryError, TransientDeliveryError
from taskwarden.model import Problem
from taskwarden.notify.pagerduty import PagerDutyNotifier
from taskwarden.outbox import DeliverySettings, OutboxSender, Receiver
from taskwarden.state import open_state

from .alerting_harness import notification_of
from .conftest import T0
from .helpers import free_port, serving

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

ROUTING_KEY = "R0123456789ABCDEF0123456789ABCDE"  # 32 characters, as PagerDuty's are


@dataclass
class PagerDuty:
    """Events API v2 on loopback: what https://events.pagerduty.com/v2/enqueue documents."""

    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answers for the next requests, in order, before any validation."""
    fail_calls: set[int] = field(default_factory=set)
    """Requests (counted from 1) answered 500."""
    calls: int = 0
    url: str = ""

    async def enqueue(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.calls in self.fail_calls:
            return web.json_response({"status": "error"}, status=500)
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"status": "throttled"}, status=status, headers=headers)
        try:
            event = await request.json()
        except ValueError:
            return self.invalid(["Invalid JSON"])
        problems = self.validate(event)
        if problems:
            return self.invalid(problems)
        self.events.append(event)
        key = event["dedup_key"]
        if event["event_action"] == "trigger":
            self.incidents.setdefault(key, {"payload": event["payload"], "status": "triggered"})
        elif key in self.incidents:
            self.incidents[key]["status"] = "resolved"
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    @staticmethod
    def validate(event: Any) -> list[str]:
        if not isinstance(event, dict):
            return ["Event object is invalid"]
        problems = []
        if len(str(event.get("routing_key", ""))) != 32:
            problems.append("'routing_key' is invalid")
        if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            problems.append("'event_action' is invalid")
        if len(str(event.get("dedup_key", ""))) > 255:
            problems.append("'dedup_key' is too long")
        if event.get("event_action") == "trigger":
            payload = event.get("payload") or {}
            problems += [
                f"'payload.{key}' is missing or blank"
                for key in ("summary", "source", "severity")
                if not payload.get(key)
            ]
            if payload.get("severity") not in ("critical", "error", "warning", "info"):
                problems.append("'payload.severity' is invalid")
            if len(str(payload.get("summary", ""))) > 1024:
                problems.append("'payload.summary' is too long")
        return problems

    @staticmethod
    def invalid(errors: list[str]) -> web.Response:
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
        return web.json_response(body, status=400)


@pytest.fixture
async def pagerduty() -> AsyncIterator[PagerDuty]:
    server = PagerDuty()
    app = web.Application()
    app.router.add_post("/v2/enqueue", server.enqueue)
    async with serving(app) as base:
        server.url = f"{base}/v2/enqueue"
        yield server


def alert(key: str, *, resolved: bool = False, title: str = "") -> Alert:
    return Alert(
        key=key, rule="failed-deploys", source="dr_prod", severity=Severity.CRITICAL,
        labels=(("team", "catalog"), ("kind", "DEPLOY_PRODUCT")),
        title=title or f"Deploy {key} failed", one_shot=False,
        state=AlertState.RESOLVED if resolved else AlertState.FIRING, starts_at=T0,
        tasks=(
            TaskFacts(
                task_id=f"task-{key}", kind="DEPLOY_PRODUCT", status="FAILED", received_time=T0,
                uri=f"https://api.example/v1/products/tasks/task-{key}",
                errors=(Problem("E42", "price is not a number"),),
            ),
        ),
    )  # fmt: skip


def notification(*alerts: Alert) -> Notification:
    return notification_of("pd", *alerts)


async def test_alerts_open_repeat_and_resolve_one_incident_each(pagerduty: PagerDuty) -> None:
    notifier = PagerDutyNotifier("pd", ROUTING_KEY, url=pagerduty.url)
    await notifier.send(notification(alert("a"), alert("b")), thread=None)
    await notifier.send(notification(alert("a")), thread=None)  # a repeat: same incident
    assert len(pagerduty.incidents) == 2
    first = pagerduty.events[0]
    assert first["event_action"] == "trigger"
    assert first["payload"]["severity"] == "critical"
    assert first["payload"]["summary"] == "Deploy a failed"
    assert first["payload"]["custom_details"]["errors"] == "E42: price is not a number"
    assert first["payload"]["custom_details"]["labels"]["team"] == "catalog"
    assert first["links"] == [
        {"href": "https://api.example/v1/products/tasks/task-a", "text": "task task-a"}
    ]
    await notifier.send(notification(alert("a", resolved=True)), thread=None)
    assert {k: v["status"] for k, v in pagerduty.incidents.items()} == {
        first["dedup_key"]: "resolved",
        pagerduty.events[1]["dedup_key"]: "triggered",
    }


async def test_an_invalid_event_is_given_up_with_pagerdutys_reason(pagerduty: PagerDuty) -> None:
    notifier = PagerDutyNotifier("pd", "too-short", url=pagerduty.url)
    with pytest.raises(PermanentDeliveryError, match="400: Event object is invalid 'routing_key'"):
        await notifier.send(notification(alert("a")), thread=None)


async def test_rate_limits_and_server_errors_are_retried(pagerduty: PagerDuty) -> None:
    notifier = PagerDutyNotifier("pd", ROUTING_KEY, url=pagerduty.url)
    pagerduty.script += [(429, {"Retry-After": "30"}), (502, {})]
    with pytest.raises(TransientDeliveryError, match="429") as limited:
        await notifier.send(notification(alert("a")), thread=None)
    assert limited.value.retry_after == 30.0
    with pytest.raises(TransientDeliveryError, match="502"):
        await notifier.send(notification(alert("a")), thread=None)
    down = PagerDutyNotifier("pd", ROUTING_KEY, url=f"http://127.0.0.1:{free_port()}/v2/enqueue")
    with pytest.raises(TransientDeliveryError, match="PagerDuty unreachable"):
        await down.send(notification(alert("a")), thread=None)


async def test_a_message_cut_off_midway_is_sent_again_without_a_second_incident(
    tmp_path: Path, pagerduty: PagerDuty
) -> None:
    """Three alerts, the second event answered 500: the outbox retries the message; the
    first event is accepted again by dedup_key, so PagerDuty still has three incidents."""
    store = open_state(tmp_path / "state.db", now=T0)
    store.enqueue(notification(alert("a"), alert("b"), alert("c")), T0)
    now = [T0]
    sender = OutboxSender(
        store,
        {"pd": Receiver(PagerDutyNotifier("pd", ROUTING_KEY, url=pagerduty.url))},
        DeliverySettings(),
        clock=lambda: now[0],
    )

    pagerduty.fail_calls.add(2)
    await sender.deliver_due()
    assert len(pagerduty.incidents) == 1
    now[0] = T0 + timedelta(minutes=5)
    report = await sender.deliver_due()
    assert report.total_sent == 1
    assert len(pagerduty.incidents) == 3
    assert len(pagerduty.events) == 4  # a, then a (again), b, c
    store.close()


async def test_configured_by_yaml_and_secret_and_test_notify_opens_and_resolves(
    tmp_path: Path, pagerduty: PagerDuty, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from taskwarden.cli import cli
    from taskwarden.config import load_settings
    from taskwarden.wiring import settings_secrets

    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "sources:\n  dr: {base_url: 'http://127.0.0.1:9'}\n"
        f"receivers:\n  pd:\n    pagerduty: {{url: '{pagerduty.url}'}}\n"
        "route: {receiver: pd}\n"
    )
    env = {
        "TASKWARDEN_RECEIVERS__PD__PAGERDUTY__ROUTING_KEY": ROUTING_KEY,
        "TASKWARDEN_SOURCES__DR__API_KEY": "k",
    }

    def invoke(*args: str) -> Any:  # in a thread: the server answers on this test's loop
        return CliRunner().invoke(cli, [*args, "-c", str(config)], env=env)

    sent = await asyncio.to_thread(invoke, "test-notify", "pd")
    assert sent.exit_code == 0, sent.output
    assert [e["event_action"] for e in pagerduty.events] == ["trigger", "resolve"]
    assert pagerduty.incidents["taskwarden-test"]["status"] == "resolved"
    assert ROUTING_KEY not in sent.output
    missing = await asyncio.to_thread(
        lambda: CliRunner().invoke(cli, ["check", "-c", str(config)], env={})
    )
    assert missing.exit_code == 2
    assert "receivers.pd.pagerduty.routing_key" in missing.output
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert ROUTING_KEY in settings_secrets(load_settings(config))
