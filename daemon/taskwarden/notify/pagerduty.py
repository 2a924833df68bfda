"""PagerDuty Events API v2: one ``trigger`` per firing alert, one ``resolve`` per resolved
one, ``dedup_key`` = the alert's fingerprint (so a repeat updates the same incident).

2xx (PagerDuty answers 202) is accepted; 400 (an invalid event) is given up; 429 and 5xx
are retried through the outbox. A notification's events are sent in order; when one
fails, the whole notification is retried later, and the events already accepted are
accepted again by ``dedup_key`` (PagerDuty de-duplicates them): nothing opens twice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from taskwarden.alerts import AlertState, Severity
from taskwarden.delivery import Receipt
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.jsonpost import post_json, receiver_client
from taskwarden.notify.webhook import alert_annotations, alert_labels, fingerprint
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    import httpx

    from taskwarden.alerts import Alert, Notification

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
MAX_SUMMARY = 1024
"""PagerDuty truncates (and may refuse) a longer ``payload.summary``."""
SEVERITIES = {Severity.CRITICAL: "critical", Severity.WARNING: "warning", Severity.INFO: "info"}


def event(alert: Alert, routing_key: str, *, client_url: str = "") -> dict[str, Any]:
    """The Events API v2 body for one alert."""
    key = fingerprint(alert)
    if alert.state is AlertState.RESOLVED:
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    labels = alert_labels(alert)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": alert.title[:MAX_SUMMARY],
            "source": alert.source,
            "severity": SEVERITIES[alert.severity],
            "component": labels.get("kind", ""),
            "group": labels.get("team", ""),
            "class": alert.rule,
            "custom_details": {**alert_annotations(alert), "labels": labels},
        },
        "client": "taskwarden",
        "links": [
            {"href": href, "text": f"task {t.task_id}"}
            for t in alert.tasks
            if (href := t.console_uri or t.uri)
        ][:5],
    }
    if alert.starts_at is not None:
        body["payload"]["timestamp"] = format_api_time(alert.starts_at)
    if client_url:
        body["client_url"] = client_url
    return body


class PagerDutyNotifier(NotifierBase):
    def __init__(
        self,
        name: str,
        routing_key: str,
        *,
        url: str = EVENTS_URL,
        timeout: float = 10.0,
        client_url: str = "",
    ) -> None:
        super().__init__(name)
        self._key = routing_key
        self._url = url
        self._timeout = timeout
        self._client_url = client_url

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - incidents, not threads
        alerts = [*notification.firing, *notification.resolved]
        events = [event(a, self._key, client_url=self._client_url) for a in alerts]
        if notification.test and not alerts:
            events = _test_events(self._key)
        async with receiver_client(self._timeout) as client:
            for body in events:
                await self._post(client, body)
        return Receipt()

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        await post_json(
            client,
            self._url,
            json.dumps(body, separators=(",", ":")).encode(),
            receiver=self._name,
            service="PagerDuty",
            explain=_message,
        )

    async def check(self) -> str:
        return (
            "routing key configured (PagerDuty can only verify it by an event: use "
            "test-notify, which opens and resolves a test incident)"
        )


def _test_events(routing_key: str) -> list[dict[str, Any]]:
    """test-notify: a test incident, opened and resolved at once."""
    return [
        {
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": "taskwarden-test",
            "payload": {
                "summary": "taskwarden test notification: this receiver works",
                "source": "taskwarden",
                "severity": "info",
            },
            "client": "taskwarden",
        },
        {"routing_key": routing_key, "event_action": "resolve", "dedup_key": "taskwarden-test"},
    ]


def _message(excerpt: str) -> str:
    """PagerDuty's own explanation (``message`` and ``errors``), short."""
    try:
        data = json.loads(excerpt)
    except ValueError:
        return excerpt[:200]
    if not isinstance(data, dict):
        return ""
    errors = data.get("errors")
    detail = "; ".join(str(e) for e in errors[:3]) if isinstance(errors, list) else ""
    return f"{data.get('message', '')} {detail}".strip()[:300]
