"""Receiver ``title`` and ``text`` templates (Alertmanager's ``title`` / ``text``): Jinja2 in
its sandbox over the whole message, compiled when the receiver is built and tried on a
sample message, so an error is found at ``check`` / load with the key and line.

Escaping is per medium and automatic: every ``{{ value }}`` goes through the medium's
escape (Slack's ``&<>``, HTML for e-mail, Teams' Markdown) while the template's own text is
the operator's markup, so an ERID of ``<!channel>`` stays inert in any template. Without a
template, each receiver shows its built-in rendering, which the context also offers
(``headline``, ``text``) for templates that only add to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from taskwarden.alerts import Alert, Notification, Severity, TaskFacts
from taskwarden.model import Problem, Product
from taskwarden.notify.render import (
    alert_view,
    common_labels,
    headline,
    plain_text,
    silence_command,
    summary_line,
)
from taskwarden.templates import LabelMap, task_context
from taskwarden.timeutil import format_api_time

if TYPE_CHECKING:
    from jinja2 import Template

Escape = Callable[[str], str]
MAX_RENDERED = 40_000
"""Characters a rendered template keeps (each medium cuts further to its own limits)."""


class MessageTemplateError(ValueError):
    """A template that does not compile, or fails on the sample message or a real one."""


def _alert_context(alert: Alert, now: datetime) -> dict[str, Any]:
    view = alert_view(alert)
    tasks = [task_context(t, now) for t in alert.tasks]
    return {
        "status": alert.state.value,
        "rule": alert.rule,
        "title": view.title,
        "severity": alert.severity.value,
        "source": alert.source,
        "labels": LabelMap(alert.labels),
        "annotations": LabelMap(alert.annotations),
        "note": view.note,
        "starts_at": format_api_time(alert.starts_at) if alert.starts_at else "",
        "count": alert.total,
        "task": tasks[0] if tasks else None,
        "tasks": tasks,
    }


def message_context(n: Notification) -> dict[str, Any]:
    """What a receiver template sees: the message, its alerts and the built-in texts."""
    now = n.created_at or datetime.now(UTC)
    firing = [_alert_context(a, now) for a in n.firing]
    resolved = [_alert_context(a, now) for a in n.resolved]
    return {
        "receiver": n.receiver,
        "status": "resolved" if n.only_resolved else "firing",
        "severity": n.severity.value,
        "group_labels": LabelMap(n.group_labels),
        "common_labels": LabelMap(common_labels(n)),
        "alerts": firing + resolved,
        "firing": firing,
        "resolved": resolved,
        "firing_total": n.firing_total,
        "resolved_total": n.resolved_total,
        "new_total": n.new_total,
        "repeat": n.repeat,
        "test": n.test,
        "more": summary_line(n) or "",
        "silence": silence_command(n) or "",
        "headline": headline(n),
        "text": plain_text(n),
    }


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    template: Template

    def render(self, n: Notification) -> str:
        """The message through the template; `MessageTemplateError` when it fails on it."""
        try:
            return self.template.render(message_context(n)).strip()[:MAX_RENDERED]
        except Exception as exc:  # noqa: BLE001 - whatever a template does is its error
            raise MessageTemplateError(f"{type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ReceiverTemplates:
    """A receiver's ``title`` and ``text``, compiled once with its medium's escaping; none:
    the medium's built-in rendering."""

    title: MessageTemplate | None = None
    text: MessageTemplate | None = None
    html: MessageTemplate | None = None
    """``text`` again, HTML-autoescaped (e-mail's HTML part)."""

    @classmethod
    def compile(
        cls,
        title: str | None,
        text: str | None,
        *,
        title_escape: Escape | None = None,
        text_escape: Escape | None = None,
        with_html: bool = False,
    ) -> ReceiverTemplates:
        return cls(
            compile_template(title, escape=title_escape) if title else None,
            compile_template(text, escape=text_escape) if text else None,
            compile_template(text, html=True) if text and with_html else None,
        )


BUILT_IN = ReceiverTemplates()


def templated(
    n: Notification, template: MessageTemplate | None, default: str, what: str
) -> tuple[str, list[str]]:
    """(text, trouble): the template's rendering, or ``default`` and a line saying why the
    receiver's template could not be used for this message (it is never dropped)."""
    if template is None:
        return default, []
    try:
        return template.render(n), []
    except MessageTemplateError as exc:
        why = f"(This receiver's {what} template failed on this message: {exc}; "
        return default, [why + "the built-in one is shown.)"]


def compile_template(
    source: str, *, escape: Escape | None = None, html: bool = False
) -> MessageTemplate:
    """Compile with the medium's escaping (``escape`` for every value, or HTML autoescape)
    and render once on `SAMPLE`; raises `MessageTemplateError` naming the line."""
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        finalize=(lambda value: escape(str(value))) if escape is not None else None,
        auto_reload=False,
    )
    try:
        template = MessageTemplate(env.from_string(source))
    except TemplateError as exc:
        raise MessageTemplateError(_where(exc, str(exc))) from None
    try:
        template.template.render(message_context(SAMPLE))
    except Exception as exc:  # noqa: BLE001 - whatever the sample provokes is reported
        names = ", ".join(sorted(message_context(SAMPLE)))
        raise MessageTemplateError(
            _where(exc, f"{type(exc).__name__}: {exc} (names: {names})")
        ) from None
    return template


def check_template(source: str) -> str:
    """For the settings: the template compiles and renders on the sample message."""
    compile_template(source)
    return source


def _where(exc: Exception, message: str) -> str:
    line = getattr(exc, "lineno", None)
    return f"{message} (line {line} of the template)" if line else message


_T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_SAMPLE_TASK = TaskFacts(
    task_id="00000000-0000-0000-0000-000000000000",
    kind="DEPLOY_PRODUCT",
    status="FAILED",
    received_time=_T0 - timedelta(minutes=12),
    finished_time=_T0,
    products=(Product("1000", "SKU-1", "PHYSICAL"),),
    uri="https://api.example/v1/products/tasks/00000000-0000-0000-0000-000000000000",
    errors=(Problem("E42", "price is not a number"),),
)
SAMPLE = Notification(
    receiver="sample",
    group_key="sample",
    group_labels=(("team", "catalog"),),
    firing=(
        Alert(
            key="sample",
            rule="failed-deploys",
            source="dr_prod",
            severity=Severity.CRITICAL,
            labels=(("kind", "DEPLOY_PRODUCT"), ("rule", "failed-deploys"), ("team", "catalog")),
            title="DEPLOY_PRODUCT failed: SKU-1",
            starts_at=_T0,
            tasks=(_SAMPLE_TASK,),
            annotations=(("summary", "Deploy of SKU-1 failed"),),
        ),
    ),
    firing_total=1,
    new_total=1,
    created_at=_T0 + timedelta(minutes=4),
)
"""What a receiver template is tried on at load: every name a real message has."""
