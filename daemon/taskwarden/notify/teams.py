"""Microsoft Teams through a Workflows webhook ("Post to a channel when a webhook request is
received"), with an Adaptive Card; Office 365 connectors are retired.

Teams renders a subset of Markdown in card text, so vendor text is escaped and stays inert
(an ERID of ``[click](https://evil)`` is shown, not linked). The webhook URL carries its
signature: a secret. Workflows answers 202; 429 and 5xx are retried, other answers given up.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from taskwarden.alerts import AlertState
from taskwarden.delivery import Receipt
from taskwarden.notify.base import NotifierBase
from taskwarden.notify.jsonpost import post_json, receiver_client
from taskwarden.notify.templating import BUILT_IN, ReceiverTemplates, templated
from taskwarden.notify.webhook import alert_labels

if TYPE_CHECKING:
    from taskwarden.alerts import Alert, Notification

MAX_ALERTS = 10
"""Alerts shown in full per card; the rest are counted."""
MAX_TEXT = 2000
"""Characters of one vendor value (Teams cuts long cards, silently)."""
MAX_CARD_TEXT = 20_000
"""Characters of one text block: a receiver's whole text (Teams takes about 28 KB a card)."""
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~])")


def inert(text: str) -> str:
    """Vendor text as literal card text: every Markdown character escaped, cut to length."""
    cut = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", cut)


def _headline(notification: Notification) -> str:
    firing, resolved = notification.firing_total, notification.resolved_total
    parts = []
    if firing:
        parts.append(f"FIRING: {firing} alert{'s' if firing != 1 else ''}")
    if resolved:
        parts.append(f"RESOLVED: {resolved}")
    if notification.test:
        return "taskwarden test notification: this receiver works"
    severity = notification.severity.value.upper()
    group = ", ".join(f"{k}={v}" for k, v in notification.group_labels)
    return f"[{severity}] {' · '.join(parts) or 'no alerts'}" + (f" — {group}" if group else "")


def _alert_blocks(alert: Alert) -> list[dict[str, Any]]:
    labels = alert_labels(alert)
    state = "RESOLVED" if alert.state is AlertState.RESOLVED else labels["severity"].upper()
    facts = [
        {"title": "rule", "value": inert(alert.rule)},
        {"title": "source", "value": inert(alert.source)},
        *({"title": inert(k), "value": inert(v)} for k, v in alert.labels if v),
    ]
    for task in alert.tasks[:3]:
        ids = [p.external_reference_id or p.product_id or "?" for p in task.products]
        what = f"{task.kind} {task.status}" + (f" ({', '.join(ids)})" if ids else "")
        facts.append({"title": inert(task.task_id), "value": inert(what)})
        facts += [
            {"title": inert(p.code or "error"), "value": inert(p.description)}
            for p in task.errors[:3]
        ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": inert(f"{state}: {alert.title}"),
            "weight": "Bolder",
            "wrap": True,
            "spacing": "Medium",
            "separator": True,
        },
        {"type": "FactSet", "facts": facts},
    ]
    if alert.note:
        blocks.append({"type": "TextBlock", "text": inert(alert.note), "wrap": True})
    return blocks


def templates(title: str | None, text: str | None) -> ReceiverTemplates:
    """Both are card text: every value Markdown-escaped."""
    return ReceiverTemplates.compile(title, text, title_escape=inert, text_escape=inert)


def _text_block(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text[:MAX_CARD_TEXT], "wrap": True, **style}


def card(notification: Notification, templates: ReceiverTemplates = BUILT_IN) -> dict[str, Any]:
    """The Workflows webhook body: a message with one Adaptive Card (schema 1.4)."""
    alerts = [*notification.firing, *notification.resolved]
    title, trouble = templated(
        notification, templates.title, inert(_headline(notification)), "title"
    )
    text, failed = templated(notification, templates.text, "", "text")
    trouble += failed
    body = [_text_block(title, size="Large", weight="Bolder", style="heading")]
    body += [_text_block(inert(t), isSubtle=True) for t in trouble]
    if templates.text is not None and not failed:
        body.append(_text_block(text))
    else:
        for alert in alerts[:MAX_ALERTS]:
            body += _alert_blocks(alert)
    hidden = notification.firing_total + notification.resolved_total - min(len(alerts), MAX_ALERTS)
    if hidden > 0:
        body.append({"type": "TextBlock", "text": f"… and {hidden} more", "isSubtle": True})
    links = [
        {"type": "Action.OpenUrl", "title": f"task {t.task_id}"[:40], "url": url}
        for a in alerts[:MAX_ALERTS]
        for t in a.tasks
        if (url := t.console_uri or t.uri) and url.startswith("https://")
    ][:5]
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "msteams": {"width": "Full"},
    }
    if links:
        content["actions"] = links
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": content,
            }
        ],
    }


class TeamsNotifier(NotifierBase):
    def __init__(
        self, name: str, url: str, *, timeout: float = 10.0, templates: ReceiverTemplates = BUILT_IN
    ) -> None:
        super().__init__(name)
        self._templates = templates
        self._url = url
        self._timeout = timeout

    async def send(self, notification: Notification, *, thread: str | None) -> Receipt:  # noqa: ARG002 - a Workflows webhook cannot reply in a thread
        body = json.dumps(card(notification, self._templates), separators=(",", ":")).encode()
        async with receiver_client(self._timeout) as client:
            await post_json(client, self._url, body, receiver=self._name, service="Teams")
        return Receipt()

    async def check(self) -> str:
        return "Workflows URL configured (it can only be verified by posting: use test-notify)"
