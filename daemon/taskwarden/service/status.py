"""What an operator asks: what is watched, what fires, what is silenced, what is stuck in
the outbox. One `StatusView`, gathered from the state, shown three ways: the status page
(server-rendered HTML, no JavaScript, refreshing itself), ``/api/v1/status`` and the
``taskwarden alerts`` command. Vendor text is escaped on the page like in e-mail.
"""

from __future__ import annotations

import html
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from taskwarden.alerts import humanize
from taskwarden.matchers import match_all, single_valued
from taskwarden.notify.render import headline
from taskwarden.runtime import is_ok
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from taskwarden.matchers import Matcher
    from taskwarden.routing import Silence
    from taskwarden.state.protocol import (
        AlertDelivery,
        AlertRecord,
        OutboxEntry,
        SourceStatus,
        StateStore,
    )

WINDOW = timedelta(hours=24)
"""How far back the view shows alerts told once and finished deliveries."""
MAX_OPEN_TASKS = 20
REFRESH_SECONDS = 30


@dataclass(frozen=True, slots=True)
class StatusView:
    now: datetime
    sources: tuple[SourceStatus, ...]
    readiness: Mapping[str, str]
    alerts: tuple[AlertRecord, ...]
    silences: tuple[Silence, ...]
    outbox: tuple[OutboxEntry, ...]


def gather(store: StateStore, readiness: Mapping[str, str], now: datetime) -> StatusView:
    since = now - WINDOW
    return StatusView(
        now=now,
        sources=store.summary().sources,
        readiness=dict(readiness),
        alerts=tuple(store.alert_records(since)),
        silences=tuple(s for s in store.silences() if s.ends_at > now),
        outbox=tuple(store.outbox_entries(since)),
    )


def matching(records: Sequence[AlertRecord], matchers: Sequence[Matcher]) -> list[AlertRecord]:
    return [r for r in records if match_all(matchers, single_valued(r.alert.labels))]


# --- JSON ------------------------------------------------------------------------------------


def _time(moment: datetime | None) -> str | None:
    return format_api_time(moment) if moment is not None else None


def alert_json(record: AlertRecord) -> dict[str, Any]:
    alert = record.alert
    return {
        "key": alert.key,
        "status": alert.state.value,
        "rule": alert.rule,
        "source": alert.source,
        "severity": alert.severity.value,
        "title": alert.title,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": _time(alert.starts_at),
        "endsAt": _time(alert.ends_at),
        "updatedAt": _time(record.updated),
        "outcome": record.outcome or "pending",
        "receivers": [
            {
                "receiver": d.receiver,
                "told": d.told or None,
                "groupLabels": dict(d.group_labels),
                "lastSentAt": _time(d.last_sent),
            }
            for d in record.receivers
        ],
        "tasks": [
            {"id": t.task_id, "kind": t.kind, "status": t.status, "url": t.console_uri or t.uri}
            for t in alert.tasks
        ],
    }


def silence_json(silence: Silence, now: datetime) -> dict[str, Any]:
    return {
        "id": silence.silence_id,
        "matchers": [str(m) for m in silence.matchers],
        "startsAt": _time(silence.starts_at),
        "endsAt": _time(silence.ends_at),
        "status": "active" if silence.is_active(now) else "pending",
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "origin": silence.origin,
    }


def outbox_json(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "id": entry.entry_id,
        "receiver": entry.receiver,
        "state": _outbox_state(entry),
        "attempts": entry.attempts,
        "createdAt": _time(entry.created),
        "nextAttemptAt": _time(entry.next_attempt) if entry.state == "pending" else None,
        "doneAt": _time(entry.done),
        "lastError": entry.last_error,
        "headline": headline(entry.notification) if entry.notification else None,
    }


def _outbox_state(entry: OutboxEntry) -> str:
    if entry.state == "pending":
        return "retrying" if entry.attempts else "waiting"
    return "given up" if entry.state == "dead" else entry.state


def status_json(view: StatusView) -> dict[str, Any]:
    return {
        "now": _time(view.now),
        "ready": bool(view.readiness) and all(is_ok(v) for v in view.readiness.values()),
        "readiness": dict(view.readiness),
        "sources": [
            {
                "source": s.source,
                "checkpoint": _time(s.checkpoint),
                "lagSeconds": (view.now - s.checkpoint).total_seconds() if s.checkpoint else None,
                "lastSuccess": _time(s.last_success),
                "strategy": s.last_strategy,
                "health": view.readiness.get(s.source, "not configured"),
                "tasksByStatus": s.tasks_by_status,
                "openTasks": [
                    {
                        "id": t.task_id,
                        "kind": t.kind,
                        "status": t.status,
                        "ageSeconds": (view.now - t.received_time).total_seconds(),
                    }
                    for t in _oldest(s)
                ],
            }
            for s in view.sources
        ],
        "alerts": [alert_json(r) for r in view.alerts],
        "silences": [silence_json(s, view.now) for s in view.silences],
        "outbox": [outbox_json(e) for e in view.outbox],
    }


def _oldest(source: SourceStatus) -> list[Any]:
    return sorted(source.open_tasks, key=lambda t: t.received_time)[:MAX_OPEN_TASKS]


# --- HTML ------------------------------------------------------------------------------------

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}.bad{color:#b00020;font-weight:600}
.ok{color:#1b5e20}nav a{margin-right:1em}code{font-size:12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _link(uri: str | None, text: str) -> str:
    if uri and urlsplit(uri).scheme in ("https", "http"):
        return f'<a href="{html.escape(uri, quote=True)}">{_e(text)}</a>'
    return _e(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str) -> str:
    if not rows:
        return f"<p>{_e(empty)}</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _ago(now: datetime, moment: datetime | None) -> str:
    return f"{humanize(now - moment)} ago" if moment is not None else "never"


def _health(text: str) -> str:
    css = "ok" if is_ok(text) else "bad"
    return f'<span class="{css}">{_e(text)}</span>'


def _sources_html(view: StatusView) -> str:
    rows = []
    for s in view.sources:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(s.tasks_by_status.items())) or "none"
        rows.append(
            [
                _e(s.source),
                _e(_ago(view.now, s.last_success)),
                _e(humanize(view.now - s.checkpoint) if s.checkpoint else "-"),
                _e(s.last_strategy or "-"),
                _health(view.readiness.get(s.source, "not configured")),
                _e(counts),
            ]
        )
    trouble = [[_e(k), _health(v)] for k, v in view.readiness.items() if k.startswith("daemon:")]
    tasks = [
        [
            _e(s.source),
            _e(t.task_id),
            _e(t.kind),
            _e(t.status),
            _e(humanize(view.now - t.received_time)),
        ]
        for s in view.sources
        for t in _oldest(s)
    ]
    return (
        '<h2 id="sources">Sources</h2>'
        + _table(
            ["source", "last good poll", "lag", "strategy", "health", "tasks"],
            rows,
            "No source has been polled yet.",
        )
        + (_table(["daemon", "trouble"], trouble, "") if trouble else "")
        + '<h2 id="tasks">Open tasks, oldest first</h2>'
        + _table(["source", "task", "kind", "status", "age"], tasks, "No open task.")
    )


def _alerts_html(view: StatusView) -> str:
    by_team: dict[str, list[AlertRecord]] = {}
    for record in view.alerts:
        by_team.setdefault(record.alert.label("team") or "-", []).append(record)
    parts = ['<h2 id="alerts">Alerts</h2>']
    if not by_team:
        parts.append("<p>No alert in the last 24 hours.</p>")
    for team, records in sorted(by_team.items()):
        rows = []
        for r in records:
            a = r.alert
            links = " ".join(_link(t.console_uri or t.uri, t.task_id) for t in a.tasks[:3])
            told = "<br>".join(_delivery(view.now, d) for d in r.receivers) or "-"
            rows.append(
                [
                    _e(a.state.value),
                    _e(a.severity.value),
                    _e(a.title) + (f"<br><small>{links}</small>" if links else ""),
                    _e(a.rule),
                    _e(_ago(view.now, a.starts_at)),
                    _e(r.outcome or "pending"),
                    told,
                ]
            )
        parts.append(f"<h3>team {_e(team)}</h3>")
        parts.append(
            _table(
                ["status", "severity", "alert", "rule", "since", "outcome", "receivers"], rows, ""
            )
        )
    return "".join(parts)


def _delivery(now: datetime, d: AlertDelivery) -> str:
    group = ", ".join(f"{k}={v}" for k, v in d.group_labels) or "-"
    last = f"last message {_ago(now, d.last_sent)}" if d.last_sent else "no message yet"
    told = d.told or "not told yet"
    return f"{_e(d.receiver)}: {_e(told)} <small>(group {_e(group)}; {_e(last)})</small>"


def _silences_html(view: StatusView) -> str:
    rows = [
        [
            _e(s.silence_id),
            _e("active" if s.is_active(view.now) else "pending"),
            "<code>" + _e(", ".join(str(m) for m in s.matchers)) + "</code>",
            _e(format_api_time(s.ends_at)),
            _e(s.created_by or "-"),
            _e(s.comment or "-"),
        ]
        for s in view.silences
    ]
    return '<h2 id="silences">Silences</h2>' + _table(
        ["id", "status", "matchers", "until", "by", "comment"], rows, "No silence in force."
    )


def _outbox_cell(entry: OutboxEntry) -> str:
    state = _outbox_state(entry)
    return f'<span class="{"ok" if state == "waiting" else "bad"}">{_e(state)}</span>'


def _outbox_html(view: StatusView) -> str:
    waiting = [e for e in view.outbox if e.state != "sent"]
    rows = [
        [
            _e(e.entry_id),
            _e(e.receiver),
            _outbox_cell(e),
            _e(e.attempts),
            _e(format_api_time(e.next_attempt) if e.state == "pending" else "-"),
            _e(e.last_error or "-"),
            _e(headline(e.notification) if e.notification else "(unreadable)"),
        ]
        for e in waiting
    ]
    sent = Counter(e.receiver for e in view.outbox if e.state == "sent")
    last = {e.receiver: e.done for e in reversed(view.outbox) if e.state == "sent"}
    deliveries = [[_e(r), _e(n), _e(_ago(view.now, last.get(r)))] for r, n in sorted(sent.items())]
    return (
        '<h2 id="outbox">Outbox</h2>'
        + _table(
            ["id", "receiver", "state", "attempts", "next attempt", "last error", "message"],
            rows,
            "Nothing waiting, retrying or given up.",
        )
        + '<h2 id="deliveries">Deliveries in the last 24 hours</h2>'
        + _table(["receiver", "sent", "last"], deliveries, "Nothing delivered.")
    )


def status_html(view: StatusView) -> str:
    nav = "".join(
        f'<a href="{href}">{text}</a>'
        for href, text in (
            ("#sources", "Sources"),
            ("#alerts", "Alerts"),
            ("#silences", "Silences"),
            ("#outbox", "Outbox"),
            ("/api/v1/status", "JSON"),
            ("/readyz", "readyz"),
            ("/metrics", "metrics"),
        )
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'>"
        "<title>taskwarden status</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>taskwarden</h1><p>as of {_e(format_api_time(view.now))}</p><nav>{nav}</nav>"
        + _sources_html(view)
        + _alerts_html(view)
        + _silences_html(view)
        + _outbox_html(view)
        + "</body></html>"
    )
