"""Alerts and notifications: what the rules say, and what a receiver is told.

An `Alert` is one thing an on-call engineer should know about (a failed deploy, a task
stuck for six hours, a burst of failures, the daemon's own trouble). A `Notification` is
one message to one receiver about one group of alerts. Both are persisted (alerts in the
state, notifications in the outbox), so both have a versioned JSON form.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from taskwarden.errors import StateCorruptError, StateError
from taskwarden.model import Problem, Product
from taskwarden.timeutil import from_epoch_ms, to_epoch_ms

if TYPE_CHECKING:
    from datetime import datetime, timedelta

PAYLOAD_VERSION = 1
"""Version of the JSON written into the alerts and outbox tables."""

Labels = tuple[tuple[str, str], ...]


class Severity(StrEnum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class AlertState(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class TaskFacts:
    """What an alert shows about one task: enough to act without opening the vendor UI."""

    task_id: str
    kind: str
    status: str
    received_time: datetime
    finished_time: datetime | None = None
    products: tuple[Product, ...] = ()
    uri: str | None = None
    """The vendor API's URL of the task."""
    console_uri: str | None = None
    """The task's page in the vendor console, when the source has a ``console_url``."""
    attributes: tuple[tuple[str, str], ...] = ()
    errors: tuple[Problem, ...] = ()
    deployment_errors: tuple[Problem, ...] = ()
    deployment_warnings: tuple[Problem, ...] = ()
    details_unavailable: str | None = None
    """Why the vendor's error details could not be fetched, when they could not."""


@dataclass(frozen=True, slots=True)
class Alert:
    key: str
    """Stable identity: the same condition always yields the same key (de-duplication)."""
    rule: str
    source: str
    severity: Severity
    labels: Labels
    """Routing labels (team, rule, source, kind, status, severity and free labels)."""
    title: str
    state: AlertState = AlertState.FIRING
    one_shot: bool = True
    """A one-shot alert (a failure) is told once; a stateful one (stuck, burst, health)
    repeats while firing and can be resolved."""
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    tasks: tuple[TaskFacts, ...] = ()
    counts: tuple[tuple[str, int], ...] = ()
    """Aggregates (a burst's failures by request type)."""
    total: int = 1
    note: str = ""
    """A line of context: how a stuck task ended, how long it took."""
    annotations: Labels = ()
    """The rule's annotations (``summary``, ``description``, ``runbook_url``, free keys),
    rendered from its templates when the alert fired: text, untrusted like vendor text."""

    def label(self, name: str) -> str | None:
        return dict(self.labels).get(name)

    def resolved(self, at: datetime, note: str, tasks: tuple[TaskFacts, ...] = ()) -> Alert:
        return replace(
            self, state=AlertState.RESOLVED, ends_at=at, note=note, tasks=tasks or self.tasks
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver about one group of alerts."""

    receiver: str
    group_key: str
    group_labels: Labels
    firing: tuple[Alert, ...]
    """Firing alerts shown in full (capped: see ``firing_total``)."""
    resolved: tuple[Alert, ...] = ()
    firing_total: int = 0
    resolved_total: int = 0
    new_total: int = 0
    """How many of the firing alerts the receiver had not been told about yet."""
    counts: tuple[tuple[str, int], ...] = ()
    """Firing alerts by request type across the whole group (storms are summarised)."""
    repeat: bool = False
    test: bool = False
    created_at: datetime | None = None
    follow_up: bool = False
    """Not the first message of its group: goes into the group's Slack thread."""

    @property
    def severity(self) -> Severity:
        order = [Severity.CRITICAL, Severity.WARNING, Severity.INFO]
        shown = self.firing or self.resolved
        if not shown:
            return Severity.INFO
        return min((a.severity for a in shown), key=order.index)

    @property
    def only_resolved(self) -> bool:
        return self.firing_total == 0 and self.resolved_total > 0


# --- persisted form ---------------------------------------------------------------------------


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _dt(value: Any) -> datetime | None:
    return None if value is None else from_epoch_ms(int(value))


def _problems(items: tuple[Problem, ...]) -> list[list[str]]:
    return [[p.code, p.description] for p in items]


def _facts_json(facts: TaskFacts) -> dict[str, Any]:
    return {
        "id": facts.task_id,
        "kind": facts.kind,
        "status": facts.status,
        "received": _ms(facts.received_time),
        "finished": _ms(facts.finished_time),
        "products": [
            [p.product_id, p.external_reference_id, p.product_type] for p in facts.products
        ],
        "uri": facts.uri,
        "console": facts.console_uri,
        "attributes": [list(a) for a in facts.attributes],
        "errors": _problems(facts.errors),
        "deploymentErrors": _problems(facts.deployment_errors),
        "deploymentWarnings": _problems(facts.deployment_warnings),
        "detailsUnavailable": facts.details_unavailable,
    }


def _facts_from(data: dict[str, Any]) -> TaskFacts:
    def problems(key: str) -> tuple[Problem, ...]:
        return tuple(Problem(str(c), str(d)) for c, d in data.get(key) or ())

    received = _dt(data["received"])
    assert received is not None
    return TaskFacts(
        task_id=str(data["id"]),
        kind=str(data["kind"]),
        status=str(data["status"]),
        received_time=received,
        finished_time=_dt(data.get("finished")),
        products=tuple(Product(*p) for p in data.get("products") or ()),
        uri=data.get("uri"),
        console_uri=data.get("console"),
        attributes=tuple((str(k), str(v)) for k, v in data.get("attributes") or ()),
        errors=problems("errors"),
        deployment_errors=problems("deploymentErrors"),
        deployment_warnings=problems("deploymentWarnings"),
        details_unavailable=data.get("detailsUnavailable"),
    )


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "key": alert.key,
        "rule": alert.rule,
        "source": alert.source,
        "severity": alert.severity.value,
        "labels": [list(pair) for pair in alert.labels],
        "title": alert.title,
        "state": alert.state.value,
        "oneShot": alert.one_shot,
        "startsAt": _ms(alert.starts_at),
        "endsAt": _ms(alert.ends_at),
        "tasks": [_facts_json(t) for t in alert.tasks],
        "counts": [list(c) for c in alert.counts],
        "total": alert.total,
        "note": alert.note,
        "annotations": [list(pair) for pair in alert.annotations],
    }


def alert_from(data: dict[str, Any]) -> Alert:
    return Alert(
        key=str(data["key"]),
        rule=str(data["rule"]),
        source=str(data["source"]),
        severity=Severity(data["severity"]),
        labels=tuple((str(k), str(v)) for k, v in data["labels"]),
        title=str(data["title"]),
        state=AlertState(data["state"]),
        one_shot=bool(data["oneShot"]),
        starts_at=_dt(data.get("startsAt")),
        ends_at=_dt(data.get("endsAt")),
        tasks=tuple(_facts_from(t) for t in data.get("tasks") or ()),
        counts=tuple((str(k), int(v)) for k, v in data.get("counts") or ()),
        total=int(data.get("total", 1)),
        note=str(data.get("note", "")),
        annotations=tuple((str(k), str(v)) for k, v in data.get("annotations") or ()),
    )


def encode_alert(alert: Alert) -> str:
    return json.dumps({"v": PAYLOAD_VERSION, **alert_json(alert)}, separators=(",", ":"))


def decode_alert(text: str) -> Alert:
    return alert_from(_versioned(text, "alert"))


def encode_notification(notification: Notification) -> str:
    n = notification
    data = {
        "v": PAYLOAD_VERSION,
        "receiver": n.receiver,
        "groupKey": n.group_key,
        "groupLabels": [list(pair) for pair in n.group_labels],
        "firing": [alert_json(a) for a in n.firing],
        "resolved": [alert_json(a) for a in n.resolved],
        "firingTotal": n.firing_total,
        "resolvedTotal": n.resolved_total,
        "newTotal": n.new_total,
        "counts": [list(c) for c in n.counts],
        "repeat": n.repeat,
        "test": n.test,
        "createdAt": _ms(n.created_at),
        "followUp": n.follow_up,
    }
    return json.dumps(data, separators=(",", ":"))


def decode_notification(text: str) -> Notification:
    data = _versioned(text, "notification")
    return Notification(
        receiver=str(data["receiver"]),
        group_key=str(data["groupKey"]),
        group_labels=tuple((str(k), str(v)) for k, v in data["groupLabels"]),
        firing=tuple(alert_from(a) for a in data["firing"]),
        resolved=tuple(alert_from(a) for a in data["resolved"]),
        firing_total=int(data["firingTotal"]),
        resolved_total=int(data["resolvedTotal"]),
        new_total=int(data["newTotal"]),
        counts=tuple((str(k), int(v)) for k, v in data["counts"]),
        repeat=bool(data["repeat"]),
        test=bool(data["test"]),
        created_at=_dt(data.get("createdAt")),
        follow_up=bool(data.get("followUp", False)),
    )


def _versioned(text: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateCorruptError(f"stored {what} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StateCorruptError(f"stored {what} is not an object")
    version = data.get("v")
    if not isinstance(version, int) or version > PAYLOAD_VERSION:
        raise StateError(
            f"stored {what} has payload version {version!r}; this taskwarden understands up "
            f"to {PAYLOAD_VERSION}: upgrade taskwarden"
        )
    return data


def humanize(delta: timedelta) -> str:
    """``3d 4h``, ``5h 12m``, ``7m``, ``42s``: ages and durations in alerts."""
    seconds = max(int(delta.total_seconds()), 0)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m"
    return f"{seconds}s"
