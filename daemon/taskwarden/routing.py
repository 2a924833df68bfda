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

All pure: the store calls `plan_flush` inside its transaction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from taskwarden.alerts import Alert, AlertState, Labels, Notification
from taskwarden.matchers import Matcher, match_all, single_valued

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime


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
class _Effective:
    receiver: str
    group_by: tuple[str, ...]
    timing: Timing


def _inherit(parent: _Effective, route: Route) -> _Effective:
    t = parent.timing
    return _Effective(
        receiver=route.receiver or parent.receiver,
        group_by=route.group_by if route.group_by is not None else parent.group_by,
        timing=Timing(
            group_wait=route.group_wait if route.group_wait is not None else t.group_wait,
            group_interval=(
                route.group_interval if route.group_interval is not None else t.group_interval
            ),
            repeat_interval=(
                route.repeat_interval if route.repeat_interval is not None else t.repeat_interval
            ),
            send_resolved=(
                route.send_resolved if route.send_resolved is not None else t.send_resolved
            ),
        ),
    )


def destinations(root: Route, labels: Labels) -> list[Destination]:
    """Where an alert with ``labels`` goes (one entry per matching leaf route)."""
    if root.receiver is None:
        raise ValueError("the root route needs a receiver")
    values = single_valued(labels)
    found: list[Destination] = []

    def walk(route: Route, parent: _Effective, path: str) -> None:
        here = _inherit(parent, route)
        matched_child = False
        for index, child in enumerate(route.routes):
            if not match_all(child.matchers, values):
                continue
            walk(child, here, f"{path}.{index}")
            matched_child = True
            if not child.continue_matching:
                break
        if not matched_child:
            found.append(_destination(here, labels, path))

    walk(root, _Effective(root.receiver, (), Timing()), "0")
    return found


def _destination(route: _Effective, labels: Labels, path: str) -> Destination:
    if route.group_by == ("...",):
        group = labels
    else:
        present = dict(labels)
        group = tuple((name, present.get(name, "")) for name in route.group_by)
    key = f"{route.receiver}|{path}|{json.dumps(group, separators=(',', ':'))}"
    return Destination(route.receiver, key, group, route.timing)


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


def plan_flush(
    group: GroupState,
    members: Sequence[Member],
    silences: Sequence[Silence],
    now: datetime,
    *,
    max_shown: int = MAX_SHOWN,
) -> FlushPlan:
    new: list[Alert] = []
    still: list[Alert] = []
    resolved: list[Alert] = []
    notified: dict[str, Notified] = {}
    removed: dict[str, Outcome] = {}
    for member in members:
        alert = member.alert
        silenced = any(s.silences(alert, now) for s in silences)
        if alert.state is AlertState.RESOLVED:
            if member.notified == "firing" and group.timing.send_resolved and not silenced:
                resolved.append(alert)
                removed[alert.key] = "resolved"
            else:
                removed[alert.key] = "dropped"
            continue
        if member.inhibited or silenced:
            if alert.one_shot:
                removed[alert.key] = "inhibited" if member.inhibited else "silenced"
            else:
                notified[alert.key] = member.notified
            continue
        if member.notified == "":
            new.append(alert)
        else:
            still.append(alert)
        if alert.one_shot:
            removed[alert.key] = "notified"
        else:
            notified[alert.key] = "firing"
    repeat_due = (
        bool(still)
        and group.last_sent is not None
        and now >= group.last_sent + group.timing.repeat_interval
    )
    if not new and not resolved and not repeat_due:
        return FlushPlan(None, notified, removed)
    firing = new + still
    counts = Counter(_kind(a) for a in firing)
    notification = Notification(
        receiver=group.receiver,
        group_key=group.key,
        group_labels=group.labels,
        firing=tuple(firing[:max_shown]),
        resolved=tuple(resolved[:max_shown]),
        firing_total=sum(a.total for a in firing),
        resolved_total=sum(a.total for a in resolved),
        new_total=sum(a.total for a in new),
        counts=tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        repeat=not new and not resolved,
        created_at=now,
        follow_up=group.messages > 0,
    )
    return FlushPlan(notification, notified, removed)


def _kind(alert: Alert) -> str:
    return alert.label("kind") or alert.rule
