"""The compiled alerting configuration: teams' rules, the routing tree, health settings.

`Alerting.route` is pure: it turns a `RuleOutput` into an `AlertBatch` the store writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from taskwarden.health import HealthSettings
from taskwarden.routing import AlertBatch, Route, RoutedAlert, destinations
from taskwarden.rules import BurstRule, Team

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taskwarden.alerts import Labels
    from taskwarden.rules import RuleOutput


@dataclass(frozen=True, slots=True)
class Alerting:
    teams: tuple[Team, ...] = ()
    route: Route | None = None
    """None: alerts are recorded but nobody is told (no receivers configured)."""
    health: HealthSettings = field(default_factory=HealthSettings)
    source_labels: Mapping[str, Labels] = field(default_factory=dict)
    max_details: int = 20

    @property
    def burst_window(self) -> timedelta:
        windows = [r.window for t in self.teams for r in t.rules if isinstance(r, BurstRule)]
        return max(windows, default=timedelta(0))

    def route_output(self, output: RuleOutput) -> AlertBatch:
        fired = tuple(
            RoutedAlert(
                alert,
                tuple(destinations(self.route, alert.labels)) if self.route is not None else (),
                inhibited=alert.key in output.inhibited,
            )
            for alert in (*output.fired, *output.updated)
        )
        return AlertBatch(fired=fired, resolved=output.resolved)
