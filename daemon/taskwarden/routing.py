"""Routing, grouping and silences, after Alertmanager (which on-call engineers know).

* A routing tree of matchers picks receivers: the first matching child route handles an
  alert unless it says ``continue``; a route with no matching child handles it itself.
  Children inherit their parent's receiver and timings.
* Alerts of one route with equal ``group_by`` label values form a group: the first
  message waits ``group_wait`` (to collect siblings), later ones are sent at most every
  ``group_interval``, and a still-firing stateful alert is repeated after
  ``repeat_interval``. One message per group per flush is what keeps a storm bounded.
* A silence (label matchers with an end) suppresses notifications; the alert is still
  recorded, and a stateful alert still firing when the silence ends is then told.

All pure. The tree is compiled once (`compile_routes`); silences reach the flush as a
`Muter`; the store calls `plan_flush` inside its transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from taskwarden.alerts import Alert, AlertState, Labels, Notification
from taskwarden.matchers import Matcher, match_all, single_valued

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Timing:
    group_wait: timedelta = timedelta(seconds=30)
    group_interval: timedelta = timedelta(minutes=5)
    repeat_interval: timedelta = timedelta(hours=4)
    send_resolved: bool = True


@dataclass(frozen=True, slots=True)
class Route:
    receiver: str | None = None
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] | None = None
    """``("...",)`` groups by every label; None inherits the parent's."""
    group_wait: timedelta | None = None
    group_interval: timedelta | None = None
    repeat_interval: timedelta | None = None
    send_resolved: bool | None = None
    continue_matching: bool = False
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class Destination:
    receiver: str
    group_key: str
    group_labels: Labels
    timing: Timing


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A route with everything it inherits resolved: compiled once, at load (Alertmanager's
    ``newRoute(cr, parent)``), so that routing an alert is only matching."""

    receiver: str
    matchers: tuple[Matcher, ...]
    group_by: tuple[str, ...]
    timing: Timing
    continue_matching: bool
    path: str
    """Position in the tree (``0.2.1``): part of the group key, so two routes to one
    receiver never share a group."""
    children: tuple[RouteNode, ...] = ()


def compile_routes(route: Route, parent: RouteNode | None = None, path: str = "0") -> RouteNode:
    """The tree with inheritance applied: receiver, group_by and timings come from the
    nearest ancestor that sets them."""
    if parent is None:
        if route.receiver is None:
            raise ValueError("the root route needs a receiver")
        parent = RouteNode(
            receiver=route.receiver,
            matchers=(),
            group_by=(),
            timing=Timing(),
            continue_matching=False,
            path="",
        )
    t = parent.timing
    node = RouteNode(
        receiver=route.receiver or parent.receiver,
        matchers=route.matchers,
        group_by=route.group_by if route.group_by is not None else parent.group_by,
        timing=Timing(
            group_wait=_given(route.group_wait, t.group_wait),
            group_interval=_given(route.group_interval, t.group_interval),
            repeat_interval=_given(route.repeat_interval, t.repeat_interval),
            send_resolved=_given(route.send_resolved, t.send_resolved),
        ),
        continue_matching=route.continue_matching,
        path=path,
    )
    children = tuple(
        compile_routes(child, node, f"{path}.{index}") for index, child in enumerate(route.routes)
    )
    return replace(node, children=children)


def _given(value: T | None, inherited: T) -> T:
    return value if value is not None else inherited


def destinations(tree: RouteNode, labels: Labels) -> list[Destination]:
    """Where an alert with ``labels`` goes (one entry per matching leaf route)."""
    values = single_valued(labels)
    found: list[Destination] = []

    def walk(node: RouteNode) -> None:
        matched_child = False
        for child in node.children:
            if not match_all(child.matchers, values):
                continue
            walk(child)
            matched_child = True
            if not child.continue_matching:
                break
        if not matched_child:
            found.append(_destination(node, labels))

    walk(tree)
    return found


def _destination(node: RouteNode, labels: Labels) -> Destination:
    if node.group_by == ("...",):
        group = labels
    else:
        present = dict(labels)
        group = tuple((name, present.get(name, "")) for name in node.group_by)
    key = f"{node.receiver}|{node.path}|{json.dumps(group, separators=(',', ':'))}"
    return Destination(node.receiver, key, group, node.timing)


@dataclass(frozen=True, slots=True)
class RoutedAlert:
    alert: Alert
    destinations: tuple[Destination, ...]
    inhibited: bool = False


@dataclass(frozen=True, slots=True)
class AlertBatch:
    """What the rules decided in one evaluation, already routed: what the store writes."""

    fired: tuple[RoutedAlert, ...] = ()
    resolved: tuple[Alert, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fired or self.resolved)


def fallback_destination(receiver: str, labels: Labels) -> Destination:
    """Straight to one receiver, bypassing the tree (its routes may be what is broken)."""
    return Destination(
        receiver,
        f"{receiver}|fallback|{json.dumps(labels, separators=(',', ':'))}",
        labels,
        Timing(group_wait=timedelta(0), group_interval=timedelta(0), send_resolved=False),
    )


# --- silences ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Silence:
    silence_id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    comment: str = ""
    created_by: str = ""
    origin: Literal["config", "cli"] = "cli"

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def silences(self, alert: Alert, now: datetime) -> bool:
        return self.is_active(now) and match_all(self.matchers, single_valued(alert.labels))


class Muter(Protocol):
    """Whether an alert is muted now (Alertmanager's ``Muter.Mutes``): the flush asks, the
    alert stays recorded either way."""

    def mutes(self, alert: Alert, now: datetime) -> bool: ...


class Silences:
    """The silences in force, as one muter."""

    def __init__(self, silences: Sequence[Silence]) -> None:
        self._silences = tuple(silences)

    def mutes(self, alert: Alert, now: datetime) -> bool:
        return any(s.silences(alert, now) for s in self._silences)


NO_SILENCES = Silences(())


# --- group flushing ----------------------------------------------------------------------------

Notified = Literal["", "firing"]
Outcome = Literal["notified", "silenced", "inhibited", "resolved", "dropped"]


@dataclass(frozen=True, slots=True)
class Member:
    """An alert in one receiver's group, with what that receiver has been told."""

    alert: Alert
    notified: Notified = ""
    inhibited: bool = False


@dataclass(frozen=True, slots=True)
class GroupState:
    group_id: int
    receiver: str
    key: str
    labels: Labels
    timing: Timing
    created_at: datetime
    last_flush: datetime | None = None
    last_sent: datetime | None = None
    messages: int = 0

    @property
    def thread_key(self) -> str:
        """The group's identity for threading: its key and its serial, which is never
        reused (a group emptied and formed again is a new thread)."""
        return f"{self.key}#{self.group_id}"

    def is_due(self, now: datetime) -> bool:
        if self.last_flush is None:
            return now >= self.created_at + self.timing.group_wait
        return now >= self.last_flush + self.timing.group_interval


@dataclass(frozen=True, slots=True)
class FlushPlan:
    notification: Notification | None
    notified: dict[str, Notified] = field(default_factory=dict)
    """Members that stay, with their new notified state."""
    removed: dict[str, Outcome] = field(default_factory=dict)
    """Members that leave the group, with how they ended."""


MAX_SHOWN = 10
"""Alerts shown in full per message; the rest are counted (storm control)."""


@dataclass(slots=True)
class _Sorted:
    """A group's members sorted by what this flush does with them."""

    new: list[Alert] = field(default_factory=list)
    still: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    notified: dict[str, Notified] = field(default_factory=dict)
    removed: dict[str, Outcome] = field(default_factory=dict)

    def take(self, member: Member, muted: bool, timing: Timing) -> None:
        alert = member.alert
        if alert.state is AlertState.RESOLVED:
            told = member.notified == "firing" and timing.send_resolved and not muted
            if told:
                self.resolved.append(alert)
            self.removed[alert.key] = "resolved" if told else "dropped"
        elif member.inhibited or muted:
            if alert.one_shot:
                self.removed[alert.key] = "inhibited" if member.inhibited else "silenced"
            else:
                self.notified[alert.key] = member.notified  # told when the mute ends
        else:
            (self.new if member.notified == "" else self.still).append(alert)
            if alert.one_shot:
                self.removed[alert.key] = "notified"
            else:
                self.notified[alert.key] = "firing"

    def worth_telling(self, group: GroupState, now: datetime) -> bool:
        repeat_due = (
            bool(self.still)
            and group.last_sent is not None
            and now >= group.last_sent + group.timing.repeat_interval
        )
        return bool(self.new or self.resolved or repeat_due)


def plan_flush(
    group: GroupState,
    members: Sequence[Member],
    muter: Muter,
    now: datetime,
    *,
    max_shown: int = MAX_SHOWN,
) -> FlushPlan:
    """What one flush of a due group does: sort the members (muted, new, still firing,
    resolved), decide whether there is anything to tell, build the one message."""
    sorted_ = _Sorted()
    for member in members:
        sorted_.take(member, muter.mutes(member.alert, now), group.timing)
    if not sorted_.worth_telling(group, now):
        return FlushPlan(None, sorted_.notified, sorted_.removed)
    return FlushPlan(_message(group, sorted_, now, max_shown), sorted_.notified, sorted_.removed)


def _message(group: GroupState, sorted_: _Sorted, now: datetime, max_shown: int) -> Notification:
    """One message for the group: new and still-firing alerts, then resolved ones, the
    first ``max_shown`` of each in full and the rest counted (storm control)."""
    firing = sorted_.new + sorted_.still
    counts = Counter(_kind(a) for a in firing)
    return Notification(
        receiver=group.receiver,
        group_key=group.key,
        group_labels=group.labels,
        firing=tuple(firing[:max_shown]),
        resolved=tuple(sorted_.resolved[:max_shown]),
        firing_total=sum(a.total for a in firing),
        resolved_total=sum(a.total for a in sorted_.resolved),
        new_total=sum(a.total for a in sorted_.new),
        counts=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        repeat=not sorted_.new and not sorted_.resolved,
        created_at=now,
        follow_up=group.messages > 0,
    )


def _kind(alert: Alert) -> str:
    return alert.label("kind") or alert.rule
