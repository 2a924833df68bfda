"""A generic webhook: the Alertmanager webhook payload (version "4"), so every existing
Alertmanager webhook consumer works unchanged.

2xx is accepted; 408, 429 and 5xx are retried (Retry-After honoured by the outbox); any
other answer is given up at once. The body can be signed (HMAC-SHA256 of the exact bytes
sent, ``X-Taskwarden-Signature: sha256=<hex>``) and carry a bearer token; both are secrets.
Vendor text travels as JSON strings: inert whatever it contains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from taskwarden.alerts import AlertState
from taskwarden.delivery import Receipt
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.jsonpost import post_json, receiver_client
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taskwarden.alerts import Alert, Notification

SIGNATURE_HEADER = "X-Taskwarden-Signature"
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert that has not ended."""


def fingerprint(alert: Alert) -> str:
    """Stable per alert identity (the key), as Alertmanager's 16 hex digits."""
    return hashlib.sha256(alert.key.encode()).hexdigest()[:16]


def alert_labels(alert: Alert) -> dict[str, str]:
    return {
        "alertname": alert.rule,
        "source": alert.source,
        "severity": alert.severity.value,
        **dict(alert.labels),
    }


def alert_annotations(alert: Alert) -> dict[str, str]:
    """The rule's annotations over the defaults (``summary`` = the title, ``description``
    = the note, the task ids and vendor errors)."""
    out = {"summary": alert.title}
    if alert.note:
        out["description"] = alert.note
    if alert.tasks:
        out["task_ids"] = ", ".join(t.task_id for t in alert.tasks)
        problems = [f"{p.code}: {p.description}".strip(": ") for t in alert.tasks for p in t.errors]
        if problems:
            out["errors"] = "\n".join(problems)
    out.update(alert.annotations)
    return out


def task_link(alert: Alert) -> str:
    """The first task's console page, else its API URL: where the alert came from
    (``generatorURL``)."""
    return next((link for t in alert.tasks if (link := t.console_uri or t.uri)), "")


def _common(items: list[dict[str, str]]) -> dict[str, str]:
    if not items:
        return {}
    shared = dict(items[0])
    for other in items[1:]:
        shared = {k: v for k, v in shared.items() if other.get(k) == v}
    return shared


def _alert_json(alert: Alert) -> dict[str, Any]:
    resolved = alert.state is AlertState.RESOLVED
    return {
        "status": "resolved" if resolved else "firing",
        "labels": alert_labels(alert),
        "annotations": alert_annotations(alert),
        "startsAt": format_api_time(alert.starts_at) if alert.starts_at else ZERO_TIME,
        "endsAt": format_api_time(alert.ends_at) if resolved and alert.ends_at else ZERO_TIME,
        "generatorURL": task_link(alert),
        "fingerprint": fingerprint(alert),
    }


def payload(
    notification: Notification, *, receiver: str, max_alerts: int = 0, external_url: str = ""
) -> dict[str, Any]:
    """The Alertmanager webhook body; ``max_alerts`` (0: all) caps ``alerts`` and the rest
    are counted in ``truncatedAlerts``, as Alertmanager does."""
    alerts = [*notification.firing, *notification.resolved]
    shown = alerts[:max_alerts] if max_alerts > 0 else alerts
    total = max(notification.firing_total, len(notification.firing)) + max(
        notification.resolved_total, len(notification.resolved)
    )
    items = [_alert_json(a) for a in shown]
    if notification.test and not items:
        items = [_test_alert(notification)]  # what a consumer can show for test-notify
    firing = any(i["status"] == "firing" for i in items)
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": total - len(shown),
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": _common([i["labels"] for i in items]),
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": external_url,
        "alerts": items,
    }


def _test_alert(notification: Notification) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "TaskwardenTest", "severity": "info"},
        "annotations": {"summary": "taskwarden test notification: this receiver works"},
        "startsAt": format_api_time(notification.created_at)
        if notification.created_at
        else ZERO_TIME,
        "endsAt": ZERO_TIME,
        "generatorURL": "",
        "fingerprint": "0000000000000000",
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier(NotifierBase):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        timeout: float = 10.0,
        max_alerts: int = 0,
        bearer_token: str | None = None,
        hmac_secret: str | None = None,
        headers: Mapping[str, str] | None = None,
        external_url: str = "",
    ) -> None:
        super().__init__(name)
        self._url = url
        self._timeout = timeout
        self._max_alerts = max_alerts
        self._bearer = bearer_token
        self._secret = hmac_secret
        self._headers = dict(headers or {})
        self._external_url = external_url

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - a webhook has no threads
        body = json.dumps(
            payload(
                notification,
                receiver=self._name,
                max_alerts=self._max_alerts,
                external_url=self._external_url,
            ),
            separators=(",", ":"),
        ).encode()
        headers = dict(self._headers)
        if self._bearer:
            headers["Authorization"] = f"Bearer {self._bearer}"
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, body)
        async with receiver_client(self._timeout) as client:
            await post_json(
                client, self._url, body, receiver=self._name, service="webhook", headers=headers
            )
        return Receipt()

    async def check(self) -> str:
        return "webhook URL configured (a webhook can only be verified by posting: use test-notify)"
