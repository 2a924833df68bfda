"""The rules: pure functions from (events, remembered alerts, now) to alert changes.

Rules belong to teams. Within one team, for each rule type, the *first* rule whose
matchers accept a task decides (so "deploys and retires are critical, everything else is
a warning" is two rules in that order); different teams evaluate independently, so two
teams can both be told about the same failure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from taskwarden.alerts import Alert, AlertState, Labels, Severity, TaskFacts, humanize
from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared, TaskGone
from taskwarden.matchers import Matcher, match_all
from taskwarden.model import Phase, Task, TaskDetails
from taskwarden.templates import NO_ANNOTATIONS, Annotations, alert_context

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from datetime import datetime, timedelta

    from taskwarden.diff import Event
    from taskwarden.links import ConsoleLink


@dataclass(frozen=True, slots=True)
class FailedRule:
    """A task ended in one of ``outcomes`` (by default: failed)."""

    name: str
    team: str
    matchers: tuple[Matcher, ...] = ()
    severity: Severity = Severity.WARNING
    outcomes: frozenset[Phase] = frozenset({Phase.FAILED})
    labels: Labels = ()
    annotations: Annotations = NO_ANNOTATIONS


@dataclass(frozen=True, slots=True)
class StuckRule:
    """A task open for longer than ``after`` (per request type: ``after_by_kind``)."""

    name: str
    team: str
    after: timedelta
    after_by_kind: Mapping[str, timedelta] = field(default_factory=dict)
    matchers: tuple[Matcher, ...] = ()
    severity: Severity = Severity.WARNING
    labels: Labels = ()
    annotations: Annotations = NO_ANNOTATIONS

    def threshold(self, kind: str) -> timedelta:
        return self.after_by_kind.get(kind, self.after)


@dataclass(frozen=True, slots=True)
class BurstRule:
    """At least ``threshold`` matching failures within ``window``: one incident."""

    name: str
    team: str
    threshold: int
    window: timedelta
    matchers: tuple[Matcher, ...] = ()
    severity: Severity = Severity.CRITICAL
    inhibit: bool = True
    """While the burst fires, the team's individual failure alerts it covers are recorded
    but not sent: the burst message carries their counts and examples."""
    labels: Labels = ()
    annotations: Annotations = NO_ANNOTATIONS


Rule = FailedRule | StuckRule | BurstRule


@dataclass(frozen=True, slots=True)
class Team:
    name: str
    rules: tuple[Rule, ...]
    labels: Labels = ()
    origin: str = ""
    """The file the team came from, for error messages."""


@dataclass(frozen=True, slots=True)
class RuleInput:
    source: str
    events: Sequence[Event]
    now: datetime
    baseline: bool = False
    """A baseline poll records history: nothing in it alerts."""
    source_labels: Labels = ()
    active: Mapping[str, Alert] = field(default_factory=dict)
    """Firing stateful alerts of this source, by key."""
    recent_failures: Sequence[tuple[datetime, Task]] = ()
    """Failures observed by earlier cycles, within the longest burst window."""
    details: Mapping[str, TaskDetails | str] = field(default_factory=dict)
    """Vendor details of failed tasks, or why they could not be fetched."""
    console_link: ConsoleLink | None = None
    """How to build a task's console URL, when the source has a pattern."""


@dataclass(frozen=True, slots=True)
class RuleOutput:
    fired: tuple[Alert, ...] = ()
    """New alerts: what ``taskwarden_alerts_total{change="fired"}`` counts."""
    resolved: tuple[Alert, ...] = ()
    inhibited: frozenset[str] = frozenset()
    """Keys of fired alerts to record without sending."""
    updated: tuple[Alert, ...] = ()
    """Alerts already firing whose content changed (a burst's counts): stored, what a
    repeat shows, never counted or told as new."""

    def __add__(self, other: RuleOutput) -> RuleOutput:
        return RuleOutput(
            self.fired + other.fired,
            self.resolved + other.resolved,
            self.inhibited | other.inhibited,
            self.updated + other.updated,
        )


MAX_EXAMPLES = 5

TASK_LABELS = frozenset(
    {
        "source", "kind", "request_type", "status", "phase", "product_type", "product_id",
        "erid", "external_reference_id",
    }
)  # fmt: skip
"""What rule matchers can see of a task (besides the source's own labels)."""
RULE_ALERT_LABELS = frozenset({"team", "rule", "severity", "source", "kind", "status"})
"""What every task alert carries (besides team, rule and source labels)."""


# --- labels ------------------------------------------------------------------------------------


def task_labels(task: Task, source_labels: Labels = ()) -> dict[str, tuple[str, ...]]:
    """The values rule matchers see for a task; product labels have one value per product."""
    labels: dict[str, tuple[str, ...]] = {k: (v,) for k, v in source_labels}
    labels.update(
        source=(task.source,),
        kind=(task.kind,),
        request_type=(task.kind,),
        status=(task.status,),
        phase=(task.phase.value,),
        product_type=tuple(p.product_type for p in task.products if p.product_type),
        product_id=tuple(p.product_id for p in task.products if p.product_id),
        erid=tuple(p.external_reference_id for p in task.products if p.external_reference_id),
    )
    labels["external_reference_id"] = labels["erid"]
    return labels


def annotated(by: Rule, team: Team, now: datetime, **fields: Any) -> Alert:
    """The alert, with its rule's annotations rendered on it (none: as it is)."""
    alert = Alert(**fields)
    if not by.annotations.templates:
        return alert
    context = alert_context(
        rule=by.name,
        team=team.name,
        source=alert.source,
        severity=alert.severity.value,
        labels=alert.labels,
        tasks=alert.tasks,
        count=alert.total,
        now=now,
    )
    return replace(alert, annotations=by.annotations.render(context))


def _alert_labels(
    rule: Rule, team: Team, source_labels: Labels, extra: Iterable[tuple[str, str]]
) -> Labels:
    merged = dict(source_labels)
    merged.update(team.labels)
    merged.update(rule.labels)
    merged.update(extra)
    merged.update(team=team.name, rule=rule.name, severity=rule.severity.value)
    return tuple(sorted(merged.items()))


MAX_SUBJECT = 80


def subject(task: Task) -> str:
    """What a task is about, for a title: its product (ERID, else id), the task id only
    when it names no product. Vendor text, flattened and cut (titles reach headers)."""
    names = [p.external_reference_id or p.product_id for p in task.products]
    named = [" ".join(n.split()) for n in names if n and n.strip()]
    if not named:
        return f"task {task.task_id}"
    text = named[0] if len(named) == 1 else f"{named[0]} and {len(named) - 1} more"
    return text if len(text) <= MAX_SUBJECT else text[: MAX_SUBJECT - 1] + "…"


def facts(task: Task, given: RuleInput, *, with_details: bool = False) -> TaskFacts:
    """What an alert shows of a task; its vendor errors (or why they are missing) when
    ``with_details``, and its console link when the source has a pattern."""
    details = given.details.get(task.task_id) if with_details else None
    link = given.console_link
    base = TaskFacts(
        task_id=task.task_id,
        kind=task.kind,
        status=task.status,
        received_time=task.received_time,
        finished_time=task.finished_time,
        products=task.products,
        uri=task.uri,
        console_uri=link.for_task(task.task_id, task.source, task.products) if link else None,
        attributes=task.attributes,
    )
    if isinstance(details, TaskDetails):
        return replace(
            base,
            errors=details.errors,
            deployment_errors=details.deployment_errors,
            deployment_warnings=details.deployment_warnings,
        )
    if isinstance(details, str):
        return replace(base, details_unavailable=details)
    return base


# --- evaluation --------------------------------------------------------------------------------


def ended_in(event: Event, outcomes: frozenset[Phase]) -> Task | None:
    """The task, if this event is it reaching one of ``outcomes`` (seen first or changed)."""
    if isinstance(event, TaskAppeared) and event.task.phase in outcomes:
        return event.task
    if (
        isinstance(event, StatusChanged)
        and event.task.phase in outcomes
        and event.old_phase != event.task.phase
    ):
        return event.task
    return None


def wants_details(teams: Sequence[Team], events: Sequence[Event], baseline: bool) -> list[Task]:
    """Tasks whose failure some rule will report: the poller fetches their details."""
    if baseline:
        return []
    wanted: dict[str, Task] = {}
    for team in teams:
        failed_rules = [r for r in team.rules if isinstance(r, FailedRule)]
        for event in events:
            for rule in failed_rules:
                task = ended_in(event, rule.outcomes)
                if task is not None and match_all(rule.matchers, task_labels(task)):
                    wanted[task.task_id] = task
                    break
    return list(wanted.values())


def evaluate(teams: Sequence[Team], given: RuleInput) -> RuleOutput:
    output = RuleOutput()
    for team in teams:
        output += _evaluate_team(team, given)
    return output


def _evaluate_team(team: Team, given: RuleInput) -> RuleOutput:
    failed = [r for r in team.rules if isinstance(r, FailedRule)]
    stuck = [r for r in team.rules if isinstance(r, StuckRule)]
    bursts = [r for r in team.rules if isinstance(r, BurstRule)]
    out = _failures(team, failed, given)
    out += _stuck(team, stuck, given)
    for rule in bursts:
        out += _burst(team, rule, given, out)
    return out


def _failures(team: Team, rules: Sequence[FailedRule], given: RuleInput) -> RuleOutput:
    if given.baseline or not rules:
        return RuleOutput()
    fired: list[Alert] = []
    for event in given.events:
        for rule in rules:
            task = ended_in(event, rule.outcomes)
            if task is None or not match_all(rule.matchers, task_labels(task, given.source_labels)):
                continue
            labels = _alert_labels(
                rule,
                team,
                given.source_labels,
                [("source", task.source), ("kind", task.kind), ("status", task.status)],
            )
            fired.append(
                annotated(
                    rule,
                    team,
                    given.now,
                    key=f"failed/{team.name}/{rule.name}/{task.source}/{task.task_id}/{task.status}",
                    rule=rule.name,
                    source=task.source,
                    severity=rule.severity,
                    labels=labels,
                    title=f"{task.kind} {task.status.lower()}: {subject(task)}",
                    one_shot=True,
                    starts_at=task.finished_time or given.now,
                    tasks=(facts(task, given, with_details=True),),
                )
            )
            break
    return RuleOutput(fired=tuple(fired))


def _stuck_key(team: Team, rule: StuckRule, task: Task) -> str:
    return f"stuck/{team.name}/{rule.name}/{task.source}/{task.task_id}"


def _stuck(team: Team, rules: Sequence[StuckRule], given: RuleInput) -> RuleOutput:
    fired: list[Alert] = []
    resolved: list[Alert] = []
    for event in given.events:
        if isinstance(event, StillOpen):
            task = event.task
            for rule in rules:
                labels = task_labels(task, given.source_labels)
                if not match_all(rule.matchers, labels):
                    continue
                key = _stuck_key(team, rule, task)
                if key not in given.active and event.age >= rule.threshold(task.kind):
                    fired.append(_stuck_alert(team, rule, task, event.age, given))
                break
        elif isinstance(event, (StatusChanged, TaskGone)):
            task = event.task
            for rule in rules:
                alert = given.active.get(_stuck_key(team, rule, task))
                if alert is None:
                    continue
                if isinstance(event, TaskGone):
                    note = "the vendor no longer knows this task; it stopped being watched"
                elif task.phase.is_terminal:
                    took = (task.finished_time or given.now) - task.received_time
                    note = f"finished {task.status} after {humanize(took)}"
                else:
                    continue
                resolved.append(alert.resolved(given.now, note, (facts(task, given),)))
    return RuleOutput(fired=tuple(fired), resolved=tuple(resolved))


def _stuck_alert(
    team: Team, rule: StuckRule, task: Task, age: timedelta, given: RuleInput
) -> Alert:
    labels = _alert_labels(
        rule, team, given.source_labels, [("source", task.source), ("kind", task.kind)]
    )
    return annotated(
        rule,
        team,
        given.now,
        key=_stuck_key(team, rule, task),
        rule=rule.name,
        source=task.source,
        severity=rule.severity,
        labels=labels,
        title=f"{task.kind} stuck in {task.status} for {humanize(age)}: {subject(task)}",
        one_shot=False,
        starts_at=given.now,
        tasks=(facts(task, given),),
        note=f"open for {humanize(age)} (threshold {humanize(rule.threshold(task.kind))})",
    )


@dataclass(frozen=True, slots=True)
class _Window:
    """The failures a burst rule sees: earlier ones still in its window, and this poll's."""

    recent: tuple[Task, ...]
    new: tuple[Task, ...]

    @property
    def count(self) -> int:
        return len(self.recent) + len(self.new)


def _burst_window(rule: BurstRule, given: RuleInput) -> _Window:
    since = given.now - rule.window

    def matching(task: Task) -> bool:
        return match_all(rule.matchers, task_labels(task, given.source_labels))

    recent = tuple(t for at, t in given.recent_failures if at >= since and matching(t))
    if given.baseline:
        return _Window(recent, ())
    failed = frozenset({Phase.FAILED})
    new = tuple(t for e in given.events if (t := ended_in(e, failed)) is not None and matching(t))
    return _Window(recent, new)


def _burst(team: Team, rule: BurstRule, given: RuleInput, so_far: RuleOutput) -> RuleOutput:
    """Count the window, then: nothing, a resolution, or the one aggregate alert (new or
    refreshed) with the individual failures it covers inhibited."""
    key = f"burst/{team.name}/{rule.name}/{given.source}"
    window = _burst_window(rule, given)
    active = given.active.get(key)
    if window.count < rule.threshold and active is None:
        return RuleOutput()
    if window.count < rule.threshold and active is not None and not window.new:
        note = (
            f"over: {active.total} failures in all; "
            f"fewer than {rule.threshold} in the last {humanize(rule.window)}"
        )
        return RuleOutput(resolved=(active.resolved(given.now, note),))
    alert = _burst_alert(team, rule, given, window=window, active=active, key=key)
    inhibited = _covered(team, so_far, window) if rule.inhibit else frozenset()
    if active is not None:
        return RuleOutput(updated=(alert,), inhibited=inhibited)
    return RuleOutput(fired=(alert,), inhibited=inhibited)


def _burst_alert(
    team: Team,
    rule: BurstRule,
    given: RuleInput,
    *,
    window: _Window,
    active: Alert | None,
    key: str,
) -> Alert:
    """Counts by request type across the incident, and a few examples, newest first."""
    counted = (
        Counter(dict(active.counts))
        if active is not None
        else Counter(t.kind for t in window.recent)
    )
    counted.update(t.kind for t in window.new)
    examples = tuple(facts(t, given, with_details=True) for t in window.new[:MAX_EXAMPLES])
    if active is not None and len(examples) < MAX_EXAMPLES:
        examples = (examples + active.tasks)[:MAX_EXAMPLES]
    if not examples:
        examples = tuple(facts(t, given) for t in window.recent[-MAX_EXAMPLES:])
    total = sum(counted.values())
    return annotated(
        rule,
        team,
        given.now,
        key=key,
        rule=rule.name,
        source=given.source,
        severity=rule.severity,
        labels=_alert_labels(rule, team, given.source_labels, [("source", given.source)]),
        title=f"Failure burst: {total} failed tasks on {given.source}",
        one_shot=False,
        state=AlertState.FIRING,
        starts_at=active.starts_at if active is not None else given.now,
        tasks=examples,
        counts=tuple(sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))),
        total=total,
        note=f"{window.count} in the last {humanize(rule.window)} (threshold {rule.threshold})",
    )


def _covered(team: Team, so_far: RuleOutput, window: _Window) -> frozenset[str]:
    """The team's individual failure alerts of this poll that the burst speaks for."""
    covered = {t.task_id for t in window.new}
    return frozenset(
        a.key
        for a in so_far.fired
        if a.one_shot
        and a.label("team") == team.name
        and any(f.task_id in covered for f in a.tasks)
    )
