"""Push alerts into an existing Alertmanager (``POST /api/v2/alerts``), so a team that
runs one routes taskwarden's alerts with its own tree, silences and receivers.

Alertmanager resolves an alert by itself once its ``endsAt`` passes. A firing alert is
posted with ``endsAt`` = now + ``firing_ttl``; the routes that lead to this receiver must
repeat more often than that (checked at load), so a stateful alert (stuck, burst, source
health) is posted again before it lapses, and its resolution is posted with its real
``endsAt``. An alert told once (``failed``) lapses after ``firing_ttl``. If taskwarden stops,
its alerts lapse too: no alert outlives the process that vouches for it by more than the TTL.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx

from taskwarden.alerts import AlertState
from taskwarden.delivery import Receipt
from taskwarden.errors import TransientDeliveryError
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.jsonpost import post_json, receiver_client
from taskwarden.notify.webhook import alert_annotations, alert_labels, task_link
from taskwarden.timeutil import format_api_time, utc_now

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from taskwarden.alerts import Alert, Notification


def am_alert(
    alert: Alert, *, now: datetime, firing_ttl: timedelta, generator_url: str = ""
) -> dict[str, Any]:
    """One alert as ``POST /api/v2/alerts`` takes it (empty label values dropped: Alertmanager
    treats an empty label as absent)."""
    resolved = alert.state is AlertState.RESOLVED
    ends = (alert.ends_at or now) if resolved else now + firing_ttl
    body: dict[str, Any] = {
        "labels": {k: v for k, v in alert_labels(alert).items() if v},
        "annotations": alert_annotations(alert),
        "endsAt": format_api_time(ends),
        "generatorURL": task_link(alert) or generator_url,
    }
    if alert.starts_at is not None:
        body["startsAt"] = format_api_time(alert.starts_at)
    return body


class AlertmanagerNotifier(NotifierBase):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        firing_ttl: timedelta = timedelta(hours=6),
        timeout: float = 10.0,
        generator_url: str = "",
        bearer_token: str | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(name)
        self._endpoint = url.rstrip("/") + "/api/v2/alerts"
        self._ttl = firing_ttl
        self._timeout = timeout
        self._generator_url = generator_url
        self._bearer = bearer_token
        self._clock = clock

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - Alertmanager groups by itself
        now = self._clock()
        alerts = [
            am_alert(a, now=now, firing_ttl=self._ttl, generator_url=self._generator_url)
            for a in (*notification.firing, *notification.resolved)
        ]
        if notification.test and not alerts:
            alerts = [_test_alert(now)]
        headers = {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}
        async with receiver_client(self._timeout) as client:
            await post_json(
                client,
                self._endpoint,
                json.dumps(alerts).encode(),
                receiver=self._name,
                service="Alertmanager",
                headers=headers,
            )
        return Receipt()

    async def check(self) -> str:
        """``GET /api/v2/status``: Alertmanager answers and says its version."""
        headers = {"Authorization": f"Bearer {self._bearer}"} if self._bearer else {}
        status_url = self._endpoint.removesuffix("/alerts") + "/status"
        try:
            async with receiver_client(self._timeout) as client:
                response = await client.get(status_url, headers=headers)
            response.raise_for_status()
            version = response.json().get("versionInfo", {}).get("version", "?")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise TransientDeliveryError(
                f"Alertmanager status failed: {type(exc).__name__}: {exc}", receiver=self._name
            ) from exc
        return f"Alertmanager {version} answers"


def _test_alert(now: datetime) -> dict[str, Any]:
    return {
        "labels": {"alertname": "TaskwardenTest", "severity": "info"},
        "annotations": {"summary": "taskwarden test notification: this receiver works"},
        "startsAt": format_api_time(now),
        "endsAt": format_api_time(now + timedelta(minutes=5)),
    }
