"""Team rule files (``config/teams/*.yaml``): each team owns its rules, loaded together.

An invalid file is rejected at load with the file, the rule and the reason; every problem
of every file is reported at once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskwarden.alerts import Severity
from taskwarden.config import Duration  # noqa: TC001 - pydantic reads annotations at run time
from taskwarden.errors import ConfigError
from taskwarden.matchers import parse_all
from taskwarden.model import Phase
from taskwarden.rules import BurstRule, FailedRule, Rule, StuckRule, Team

_TEAM = re.compile(r"^[a-z][a-z0-9_-]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RuleSpec(_Spec):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    matchers: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, value: list[str]) -> list[str]:
        parse_all(value)
        return value


class FailedSpec(_RuleSpec):
    type: Literal["failed"]
    severity: Severity = Severity.WARNING
    outcomes: list[Literal["failed", "cancelled"]] = Field(default=["failed"], min_length=1)


class StuckSpec(_RuleSpec):
    type: Literal["stuck"]
    severity: Severity = Severity.WARNING
    after: Duration
    after_by_kind: dict[str, Duration] = Field(default_factory=dict)

    @field_validator("after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


class BurstSpec(_RuleSpec):
    type: Literal["burst"]
    severity: Severity = Severity.CRITICAL
    threshold: int = Field(ge=2)
    window: Duration
    inhibit: bool = True


RuleSpec = Annotated[FailedSpec | StuckSpec | BurstSpec, Field(discriminator="type")]


class TeamFile(_Spec):
    team: str
    labels: dict[str, str] = Field(default_factory=dict)
    rules: list[RuleSpec] = Field(min_length=1)

    @field_validator("team")
    @classmethod
    def _team_name(cls, value: str) -> str:
        if not _TEAM.match(value):
            raise ValueError(f"team name {value!r}: lower-case letters, digits, - and _")
        return value


def to_rule(spec: FailedSpec | StuckSpec | BurstSpec, team: str) -> Rule:
    matchers = parse_all(spec.matchers)
    labels = tuple(sorted(spec.labels.items()))
    if isinstance(spec, FailedSpec):
        return FailedRule(
            name=spec.name,
            team=team,
            matchers=matchers,
            severity=spec.severity,
            outcomes=frozenset(Phase(o) for o in spec.outcomes),
            labels=labels,
        )
    if isinstance(spec, StuckSpec):
        return StuckRule(
            name=spec.name,
            team=team,
            after=spec.after,
            after_by_kind=dict(spec.after_by_kind),
            matchers=matchers,
            severity=spec.severity,
            labels=labels,
        )
    return BurstRule(
        name=spec.name,
        team=team,
        threshold=spec.threshold,
        window=spec.window,
        matchers=matchers,
        severity=spec.severity,
        inhibit=spec.inhibit,
        labels=labels,
    )


def _location(loc: tuple[int | str, ...], data: object) -> str:
    """``rules[1] 'stuck-imports' after`` from pydantic's location tuple."""
    parts: list[str] = []
    node = data
    for step in loc:
        if isinstance(step, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{step}]"]
            node = node[step] if isinstance(node, list) and step < len(node) else None
            if isinstance(node, dict) and "name" in node:
                parts[-1] += f" {node['name']!r}"
        elif step in ("failed", "stuck", "burst"):
            continue  # the discriminator's tag: already visible in the rule
        else:
            parts.append(str(step))
            node = node.get(step) if isinstance(node, dict) else None
    return " ".join(parts) or "(top level)"


def load_team_file(path: Path) -> Team:
    """Raises ConfigError naming the file, the rule and the reason."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        spec = TeamFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {exc.error_count()} problem(s):"]
        lines.extend(f"  {_location(e['loc'], data)}: {e['msg']}" for e in exc.errors())
        raise ConfigError("\n".join(lines)) from None
    names = [r.name for r in spec.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: rule names must be unique in a team: {', '.join(duplicates)}")
    return Team(
        name=spec.team,
        rules=tuple(to_rule(r, spec.team) for r in spec.rules),
        labels=tuple(sorted(spec.labels.items())),
        origin=str(path),
    )


def load_teams(patterns: list[str], base: Path) -> tuple[Team, ...]:
    """Every file matching ``patterns`` (relative to ``base``); all problems at once."""
    files: list[Path] = []
    for pattern in patterns:
        matched = (
            sorted(base.glob(pattern))
            if not Path(pattern).is_absolute()
            else sorted(Path(pattern).parent.glob(Path(pattern).name))
        )
        if not matched:
            raise ConfigError(f"teams: no file matches {pattern!r} (relative to {base})")
        files.extend(matched)
    teams: list[Team] = []
    problems: list[str] = []
    for path in dict.fromkeys(files):
        try:
            teams.append(load_team_file(path))
        except ConfigError as exc:
            problems.append(str(exc))
    seen: dict[str, str] = {}
    for team in teams:
        if team.name in seen:
            problems.append(
                f"{team.origin}: team {team.name!r} is already defined in {seen[team.name]}"
            )
        seen[team.name] = team.origin
    if problems:
        raise ConfigError("\n".join(problems))
    return tuple(teams)
