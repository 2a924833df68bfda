"""What a notification says, independent of the medium: a headline and, per alert, the
facts an on-call engineer needs (request type, status, products, age, errors, the link).

Everything here is plain, *unescaped* text; each medium escapes it its own way.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from taskwarden.alerts import Alert, AlertState, Notification, humanize
from taskwarden.matchers import Matcher
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from taskwarden.alerts import Labels, TaskFacts

MAX_PROBLEMS = 5
MAX_PRODUCTS = 5


@dataclass(frozen=True, slots=True)
class TaskView:
    title: str
    fields: tuple[tuple[str, str], ...]
    """(name, value) pairs: request type, status, products, age …"""
    problems: tuple[tuple[str, str, str], ...]
    """(kind, code, description): errors, deployment errors and warnings."""
    links: tuple[tuple[str, str], ...]
    """(text, URL): the console page when the source has a pattern, then the API URL."""
    note: str | None = None
    problems_hidden: int = 0
    """Problems the vendor attached beyond `MAX_PROBLEMS`; a message says how many."""


@dataclass(frozen=True, slots=True)
class AlertView:
    alert: Alert
    title: str
    note: str
    counts: tuple[tuple[str, int], ...]
    tasks: tuple[TaskView, ...]
    labels: Labels = ()
    """Labels the group's common labels do not already say (`common_labels`)."""
    runbook: str | None = None


def headline(n: Notification) -> str:
    """One line that says what and how many: the Slack fallback text and e-mail subject."""
    severity = n.severity.value.upper()
    if n.test:
        return f"[TEST] taskwarden test message for receiver {n.receiver}"
    if n.only_resolved:
        first = n.resolved[0]
        if len(n.resolved) == 1 and n.resolved_total == first.total:
            return f"[RESOLVED] {first.title}"
        return f"[RESOLVED] {n.resolved_total} alerts: {_rules(n.resolved)}"
    state = "REPEAT" if n.repeat else "FIRING"
    if len(n.firing) == 1 and n.firing_total == n.firing[0].total:
        return f"[{severity}] {state}: {n.firing[0].title}"
    parts = [f"[{severity}] {state}: {n.firing_total} alerts"]
    if n.new_total and n.new_total != n.firing_total:
        parts.append(f"({n.new_total} new)")
    parts.append(f"— {_rules(n.firing)}")
    if n.counts:
        parts.append("— " + ", ".join(f"{k} ×{v}" for k, v in n.counts[:4]))
    if n.resolved_total:
        parts.append(f"; {n.resolved_total} resolved")
    return " ".join(parts)


def _rules(alerts: Iterable[Alert]) -> str:
    return ", ".join(dict.fromkeys(a.rule for a in alerts))


def _product(p: object) -> str:
    product_id = getattr(p, "product_id", None)
    erid = getattr(p, "external_reference_id", None)
    product_type = getattr(p, "product_type", None)
    text = product_id or "?"
    extras = [x for x in (f"ERID {erid}" if erid else None, product_type) if x]
    return f"{text} ({', '.join(extras)})" if extras else text


def _ago(moment: datetime, now: datetime | None) -> str:
    """``2026-03-01T12:04:05.000Z (4m ago)``: the time to search logs by, and how long ago
    it was when the message was composed."""
    stamp = format_api_time(moment)
    return f"{stamp} ({humanize(now - moment)} ago)" if now is not None and now >= moment else stamp


def task_view(facts: TaskFacts, alert: Alert, now: datetime | None = None) -> TaskView:
    """``now`` is when the notification was composed: ages are told relative to it."""
    fields: list[tuple[str, str]] = [
        ("Request type", facts.kind),
        ("Status", facts.status),
        ("Source", alert.source),
        ("Received", _ago(facts.received_time, now)),
    ]
    if facts.finished_time is not None:
        when = [f"after {humanize(facts.finished_time - facts.received_time)}"]
        if now is not None and now >= facts.finished_time:
            when.insert(0, f"{humanize(now - facts.finished_time)} ago")
        fields.append(("Finished", f"{format_api_time(facts.finished_time)} ({', '.join(when)})"))
    elif alert.starts_at is not None:
        fields.append(("Age", humanize(alert.starts_at - facts.received_time)))
    if facts.products:
        shown = ", ".join(_product(p) for p in facts.products[:MAX_PRODUCTS])
        more = len(facts.products) - MAX_PRODUCTS
        fields.append(("Products", shown + (f" and {more} more" if more > 0 else "")))
    fields.extend(facts.attributes)
    problems = [
        *(("error", p.code, p.description) for p in facts.errors),
        *(("deployment error", p.code, p.description) for p in facts.deployment_errors),
        *(("deployment warning", p.code, p.description) for p in facts.deployment_warnings),
    ]
    links = [("Open in the console", facts.console_uri)] if facts.console_uri else []
    if facts.uri:
        links.append(("API", facts.uri))
    return TaskView(
        title=f"Task {facts.task_id}",
        fields=tuple(fields),
        problems=tuple(problems[:MAX_PROBLEMS]),
        problems_hidden=max(len(problems) - MAX_PROBLEMS, 0),
        links=tuple(links),
        note=(
            f"Error details unavailable: {facts.details_unavailable}"
            if facts.details_unavailable
            else None
        ),
    )


def more_problems(hidden: int) -> str:
    return f"… and {hidden:,} more {'problem' if hidden == 1 else 'problems'} (see the task)"


SHOWN_ELSEWHERE = frozenset({"rule", "severity", "source", "alertname"})
"""Labels every alert's own line already shows."""


def common_labels(n: Notification) -> Labels:
    """The labels every alert of the message shares: said once, at the top."""
    alerts = (*n.firing, *n.resolved)
    if not alerts:
        return ()
    shared = set(alerts[0].labels)
    for alert in alerts[1:]:
        shared &= set(alert.labels)
    return tuple(sorted(shared))


def labels_line(labels: Labels) -> str:
    return " · ".join(f"{k}={v}" for k, v in labels)


def alert_view(alert: Alert, common: Labels = (), now: datetime | None = None) -> AlertView:
    """The rule's ``summary`` annotation, when it has one, is the title; its
    ``description`` joins the note (all text, escaped by each medium). Labels in
    ``common`` (said once per message) and those the alert line shows are left out."""
    prefix = "RESOLVED: " if alert.state is AlertState.RESOLVED else ""
    annotations = dict(alert.annotations)
    note = [alert.note, annotations.get("description", "")]
    said = set(common)
    return AlertView(
        alert=alert,
        title=prefix + (annotations.get("summary") or alert.title),
        note=" · ".join(part for part in note if part),
        counts=alert.counts,
        tasks=tuple(task_view(t, alert, now) for t in alert.tasks),
        labels=tuple(
            (k, v) for k, v in alert.labels if (k, v) not in said and k not in SHOWN_ELSEWHERE
        ),
        runbook=annotations.get("runbook_url") or None,
    )


SILENCE_FOR = "2h"


def silence_command(n: Notification) -> str | None:
    """A ready ``taskwarden silence add`` line for the message's group (its group labels,
    else the labels its alerts share), shell-quoted: vendor values paste safely. A group
    label the alerts lack (empty) is left out: ``kind=""`` would match none of them."""
    if n.test or n.only_resolved:
        return None
    labels = [(k, v) for k, v in n.group_labels or common_labels(n) if v]
    if not labels:
        return None
    matchers = " ".join(shlex.quote(str(Matcher.of(k, "=", v))) for k, v in labels)
    return f"taskwarden silence add --for {SILENCE_FOR} --comment 'acknowledged' {matchers}"


def summary_line(n: Notification) -> str | None:
    """``… and 4,990 more (DEPLOY_PRODUCT ×3,000, …)`` when a group is larger than shown."""
    hidden = n.firing_total - sum(a.total for a in n.firing)
    if hidden <= 0:
        return None
    by_kind = ", ".join(f"{k} ×{v:,}" for k, v in n.counts[:6])
    return f"… and {hidden:,} more firing alerts in this group (by request type: {by_kind})"


def plain_text(n: Notification) -> str:
    """The whole notification as plain text (console, e-mail text part)."""
    lines = [headline(n), ""]
    if n.test:
        lines.append("If you can read this, taskwarden can deliver to this receiver.")
    common = common_labels(n)
    if common:
        lines.extend([labels_line(common), ""])
    for alert in (*n.firing, *n.resolved):
        view = alert_view(alert, common, n.created_at)
        lines.append(f"* {view.title} [{alert.severity.value}, rule {alert.rule}]")
        if view.note:
            lines.append(f"  {view.note}")
        if view.labels:
            lines.append(f"  {labels_line(view.labels)}")
        if view.runbook:
            lines.append(f"  Runbook: {view.runbook}")
        if view.counts:
            lines.append("  By request type: " + ", ".join(f"{k} ×{v}" for k, v in view.counts))
        for task in view.tasks:
            lines.append(f"  {task.title}")
            lines.extend(f"    {name}: {value}" for name, value in task.fields)
            lines.extend(
                f"    {kind} {code}: {text}" if code else f"    {kind}: {text}"
                for kind, code, text in task.problems
            )
            if task.problems_hidden:
                lines.append(f"    {more_problems(task.problems_hidden)}")
            if task.note:
                lines.append(f"    {task.note}")
            lines.extend(f"    {text}: {uri}" for text, uri in task.links)
        lines.append("")
    if (more := summary_line(n)) is not None:
        lines.append(more)
    if (command := silence_command(n)) is not None:
        lines.extend(["", f"Silence this group: {command}"])
    return "\n".join(lines).rstrip() + "\n"
