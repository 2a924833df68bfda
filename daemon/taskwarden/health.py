"""The daemon's own trouble as alerts: rejected credentials, an unreachable or erroring
API, notifications that cannot be delivered. Pure, like the task rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from taskwarden.alerts import Alert, Labels, Severity, humanize
from taskwarden.errors import AuthenticationError
from taskwarden.rules import RuleOutput

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

HEALTH_RULE = "source_health"
DELIVERY_RULE = "delivery_failed"
HEALTH_ALERT_LABELS = frozenset({"source", "rule", "problem", "severity", "receiver"})
"""What the daemon's own alerts carry (besides ``health.labels``)."""


@dataclass(frozen=True, slots=True)
class HealthSettings:
    labels: Labels = (("team", "ops"),)
    """Labels that route the daemon's own alerts (an ops route)."""
    unreachable_after: timedelta = timedelta(minutes=15)
    """An API failing for this long alerts; rejected credentials alert at once."""
    severity: Severity = Severity.CRITICAL


def health_labels(settings: HealthSettings, source: str, rule: str, problem: str) -> Labels:
    merged = dict(settings.labels)
    merged.update(source=source, rule=rule, problem=problem, severity=settings.severity.value)
    return tuple(sorted(merged.items()))


def source_health(
    source: str,
    error: BaseException | None,
    *,
    message: str = "",
    failing_since: datetime | None,
    now: datetime,
    active: Mapping[str, Alert],
    settings: HealthSettings,
) -> RuleOutput:
    """Alerts for one source after a poll attempt (``error`` is None after a success).

    Rejected credentials alert at once; any other failure (an API error, the cycle's
    deadline, a bug) once polling has failed for ``unreachable_after``. ``message`` says
    what went wrong (default: the error's text)."""
    said = message or str(error)
    auth_key = f"health/auth/{source}"
    down_key = f"health/unreachable/{source}"
    if error is None:
        resolved = tuple(
            active[key].resolved(now, "polling works again")
            for key in (auth_key, down_key)
            if key in active
        )
        return RuleOutput(resolved=resolved)
    since = failing_since or now
    if isinstance(error, AuthenticationError):
        if auth_key in active:
            return RuleOutput()
        title = f"{source}: the API rejects taskwarden's credentials; nothing is being watched"
        return _fire(
            settings,
            source,
            auth_key,
            problem="authentication",
            title=title,
            since=since,
            note=said,
        )
    down_for = now - since
    if down_key in active or down_for < settings.unreachable_after:
        return RuleOutput()
    title = f"{source}: polling has failed for {humanize(down_for)}"
    return _fire(
        settings,
        source,
        down_key,
        problem="unreachable",
        title=title,
        since=since,
        note=f"last error: {said}",
    )


def _fire(
    settings: HealthSettings,
    source: str,
    key: str,
    *,
    problem: str,
    title: str,
    since: datetime,
    note: str,
) -> RuleOutput:
    alert = Alert(
        key=key,
        rule=HEALTH_RULE,
        source=source,
        severity=settings.severity,
        labels=health_labels(settings, source, HEALTH_RULE, problem),
        title=title,
        one_shot=False,
        starts_at=since,
        note=note,
    )
    return RuleOutput(fired=(alert,))
