"""The compiled alerting configuration: teams' rules, the routing tree, health settings.

Compiled once per configuration: the route tree is resolved at construction, so
`Alerting.route_output` (pure) only matches: it turns a `RuleOutput` into the `AlertBatch`
the store writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from taskwarden.health import HealthSettings
from taskwarden.routing import AlertBatch, RoutedAlert, compile_routes, destinations
from taskwarden.rules import BurstRule, Team

if TYPE_CHECKING:
    from collections.abc import Mapping

    from taskwarden.alerts import Labels
    from taskwarden.links import ConsoleLink
    from taskwarden.routing import Route, RouteNode
    from taskwarden.rules import RuleOutput


@dataclass(frozen=True, slots=True)
class Alerting:
    teams: tuple[Team, ...] = ()
    route: Route | None = None
    """None: alerts are recorded but nobody is told (no receivers configured)."""
    health: HealthSettings = field(default_factory=HealthSettings)
    source_labels: Mapping[str, Labels] = field(default_factory=dict)
    console_links: Mapping[str, ConsoleLink] = field(default_factory=dict)
    max_details: int = 20
    tree: RouteNode | None = field(init=False, default=None)
    """``route`` compiled (inheritance resolved), once."""
    burst_window: timedelta = field(init=False, default=timedelta(0))
    """How far back the burst rules look: what each poll reads of recent failures."""

    def __post_init__(self) -> None:
        windows = [r.window for t in self.teams for r in t.rules if isinstance(r, BurstRule)]
        object.__setattr__(self, "burst_window", max(windows, default=timedelta(0)))
        if self.route is not None:
            object.__setattr__(self, "tree", compile_routes(self.route))

    def route_output(self, output: RuleOutput) -> AlertBatch:
        fired = tuple(
            RoutedAlert(
                alert,
                tuple(destinations(self.tree, alert.labels)) if self.tree is not None else (),
                inhibited=alert.key in output.inhibited,
            )
            for alert in (*output.fired, *output.updated)
        )
        return AlertBatch(fired=fired, resolved=output.resolved)
