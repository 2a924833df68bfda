"""Annotation templates: Jinja2 in its sandboxed environment, compiled when the team files
load and tried once on a sample alert, so a syntax error or an unknown name is found at
``check`` / load (file, rule, line), never at 3 a.m. at send time.

Templates render plain text; every receiver treats the result as untrusted text, exactly
like vendor text (Slack escapes it and sends it ``verbatim``, e-mail HTML-escapes it, JSON
receivers send it as a string, Teams escapes its Markdown). A template that still fails at
render time (data the sample did not have) yields ``(template error: …)`` for that one
annotation and the alert goes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from taskwarden.alerts import humanize

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import datetime

    from jinja2 import Template

    from taskwarden.alerts import Labels, TaskFacts

MAX_RENDERED = 4000
"""Characters an annotation keeps (a template looping over a storm stays bounded)."""


class AnnotationError(ValueError):
    """A template that does not compile or does not render on the sample alert."""

    def __init__(self, key: str, message: str, line: int | None = None) -> None:
        where = f" (line {line} of the template)" if line else ""
        super().__init__(f"annotation {key!r}: {message}{where}")
        self.key = key
        self.line = line


class LabelMap(dict[str, str]):
    """An alert's labels: a label the alert does not carry reads as empty (labels vary by
    team and source; a misspelled top-level name is still an error)."""

    def __init__(self, labels: Labels) -> None:
        super().__init__(labels)

    def __missing__(self, key: str) -> str:
        return ""


def environment() -> SandboxedEnvironment:
    """No autoescaping here: the output is text, escaped by each medium."""
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, auto_reload=False)


@dataclass(frozen=True, slots=True)
class Annotations:
    """A rule's annotation templates, compiled once."""

    templates: tuple[tuple[str, Template], ...] = ()

    def render(self, context: Mapping[str, Any]) -> Labels:
        out = []
        for key, template in self.templates:
            try:
                text = template.render(context).strip()
            except Exception as exc:  # noqa: BLE001 - one bad annotation never stops an alert
                text = f"(template error: {type(exc).__name__}: {exc})"
            out.append((key, text[:MAX_RENDERED]))
        return tuple(out)


NO_ANNOTATIONS = Annotations()


def compile_annotations(raw: Mapping[str, str], env: SandboxedEnvironment) -> Annotations:
    """Compile every template and render it on a sample alert; raises `AnnotationError`."""
    compiled: list[tuple[str, Template]] = []
    for key, source in raw.items():
        try:
            template = env.from_string(source)
        except TemplateError as exc:
            raise AnnotationError(key, str(exc), getattr(exc, "lineno", None)) from None
        try:
            template.render(SAMPLE)
        except Exception as exc:  # noqa: BLE001 - whatever the sample provokes is reported
            names = f"names: {', '.join(sorted(SAMPLE))}; task: {', '.join(sorted(_TASK))}"
            raise AnnotationError(
                key, f"{type(exc).__name__}: {exc} ({names})", getattr(exc, "lineno", None)
            ) from None
        compiled.append((key, template))
    return Annotations(tuple(compiled))


def task_context(task: TaskFacts, now: datetime) -> dict[str, Any]:
    ended = task.finished_time or now
    return {
        "id": task.task_id,
        "kind": task.kind,
        "status": task.status,
        "erid": next(
            (p.external_reference_id for p in task.products if p.external_reference_id), ""
        ),
        "product_id": next((p.product_id for p in task.products if p.product_id), ""),
        "products": [
            {
                "id": p.product_id or "",
                "erid": p.external_reference_id or "",
                "type": p.product_type or "",
            }
            for p in task.products
        ],
        "errors": [f"{p.code}: {p.description}".strip(": ") for p in task.errors],
        "uri": task.uri or "",
        "age": humanize(now - task.received_time),
        "took": humanize(ended - task.received_time),
    }


def alert_context(
    *,
    rule: str,
    team: str,
    source: str,
    severity: str,
    labels: Labels,
    tasks: Sequence[TaskFacts],
    count: int,
    now: datetime,
) -> dict[str, Any]:
    shown = [task_context(t, now) for t in tasks]
    return {
        "rule": rule,
        "team": team,
        "source": source,
        "severity": severity,
        "labels": LabelMap(labels),
        "task": shown[0] if shown else None,
        "tasks": shown,
        "count": count,
    }


_TASK = {
    "id": "00000000-0000-0000-0000-000000000000",
    "kind": "DEPLOY_PRODUCT",
    "status": "FAILED",
    "erid": "SKU-1",
    "product_id": "1000",
    "products": [{"id": "1000", "erid": "SKU-1", "type": "PHYSICAL"}],
    "errors": ["E42: price is not a number"],
    "uri": "https://api.example/v1/products/tasks/00000000-0000-0000-0000-000000000000",
    "age": humanize(timedelta(minutes=12)),
    "took": humanize(timedelta(minutes=12)),
}
SAMPLE: dict[str, Any] = {
    "rule": "failed-deploys",
    "team": "catalog",
    "source": "dr_prod",
    "severity": "critical",
    "labels": LabelMap(
        (("team", "catalog"), ("rule", "failed-deploys"), ("kind", "DEPLOY_PRODUCT"))
    ),
    "task": _TASK,
    "tasks": [_TASK],
    "count": 1,
}
"""What a template is tried on at load: every name a real alert has."""
