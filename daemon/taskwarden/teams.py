"""Team rule files (``config/teams/*.yaml``): each team owns its rules, loaded together.

An invalid file is rejected at load with the file, the rule and the reason; every problem
of every file is reported at once.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from taskwarden.alerts import Severity
from taskwarden.config import (  # noqa: TC001 - pydantic reads annotations at run time
    Duration,
    Matchers,
)
from taskwarden.errors import ConfigError
from taskwarden.matchers import parse_all
from taskwarden.model import Phase
from taskwarden.rules import TASK_LABELS, BurstRule, FailedRule, Rule, StuckRule, Team
from taskwarden.templates import (
    NO_ANNOTATIONS,
    AnnotationError,
    Annotations,
    compile_annotations,
    environment,
)
from taskwarden.yamlfile import did_you_mean, explain, load_yaml

_TEAM = re.compile(r"^[a-z][a-z0-9_-]*$")


_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _rule_name(value: str) -> str:
    if _RULE_NAME.fullmatch(value) is None:
        raise ValueError(
            f"{value!r} is not a rule name: a letter or digit, then letters, digits, '_', '.', '-'"
        )
    return value


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RuleSpec(_Spec):
    name: Annotated[str, AfterValidator(_rule_name)]
    matchers: Matchers = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    """``summary``, ``description``, ``runbook_url`` and free keys: Jinja2 templates over
    the alert (``labels``, ``task``, ``tasks``, ``count``, …; see templates.py)."""

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(r"^[a-z][a-z0-9_]*$", key):
                raise ValueError(f"annotation name {key!r}: lower-case letters, digits and _")
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


def to_rule(
    spec: FailedSpec | StuckSpec | BurstSpec, team: str, annotations: Annotations = NO_ANNOTATIONS
) -> Rule:
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
            annotations=annotations,
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
            annotations=annotations,
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
        annotations=annotations,
    )


_TAGS = ("failed", "stuck", "burst")


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
        elif step in _TAGS:
            continue  # the discriminator's tag: already visible in the rule
        else:
            parts.append(str(step))
            node = node.get(step) if isinstance(node, dict) else None
    return " ".join(parts) or "(top level)"


def load_team_file(path: Path, task_labels: frozenset[str] = TASK_LABELS) -> Team:
    """Raises ConfigError naming the file, the line, the rule and the reason; a matcher on
    a label no task has is an error too (it could never match)."""
    doc = load_yaml(path)
    data = doc.data
    try:
        spec = TeamFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {exc.error_count()} problem(s):"]
        for error in exc.errors():
            loc = tuple(step for step in error["loc"] if step not in _TAGS)
            line = doc.line_of(loc)
            at = f" (line {line})" if line is not None else ""
            lines.append(f"  {_location(error['loc'], data)}{at}: {explain(error, TeamFile)}")
        raise ConfigError("\n".join(lines)) from None
    unknown: list[str] = []
    for index, rule in enumerate(spec.rules):
        line = doc.line_of(["rules", index, "matchers"])
        unknown.extend(
            f"  rules[{index}] {rule.name!r} matchers (line {line}): label {m.name!r} is "
            f"never set on a task{did_you_mean(m.name, task_labels)}"
            for m in parse_all(rule.matchers)
            if m.name not in task_labels
        )
    if unknown:
        raise ConfigError("\n".join([f"{path}: {len(unknown)} problem(s):", *unknown]))
    names = [r.name for r in spec.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: rule names must be unique in a team: {', '.join(duplicates)}")
    env = environment()
    compiled: list[Annotations] = []
    broken: list[str] = []
    for index, rule in enumerate(spec.rules):
        try:
            compiled.append(compile_annotations(rule.annotations, env))
        except AnnotationError as exc:
            line = doc.line_of(["rules", index, "annotations", exc.key])
            at = f" (line {line})" if line is not None else ""
            broken.append(f"  rules[{index}] {rule.name!r} annotations{at}: {exc}")
    if broken:
        raise ConfigError("\n".join([f"{path}: {len(broken)} problem(s):", *broken]))
    return Team(
        name=spec.team,
        rules=tuple(to_rule(r, spec.team, a) for r, a in zip(spec.rules, compiled, strict=True)),
        labels=tuple(sorted(spec.labels.items())),
        origin=str(path),
    )


def load_teams(
    patterns: list[str], base: Path, *, task_labels: frozenset[str] = TASK_LABELS
) -> tuple[Team, ...]:
    """Every file matching ``patterns`` (relative to ``base``); all problems at once."""
    teams, problems = read_teams(patterns, base, task_labels=task_labels)
    if problems:
        raise ConfigError("\n".join(problems))
    return teams


def read_teams(
    patterns: list[str], base: Path, *, task_labels: frozenset[str] = TASK_LABELS
) -> tuple[tuple[Team, ...], list[str]]:
    """The teams that load, and the problems of those that do not (each with its file)."""
    files: list[Path] = []
    problems: list[str] = []
    for pattern in patterns:
        matched = (
            sorted(base.glob(pattern))
            if not Path(pattern).is_absolute()
            else sorted(Path(pattern).parent.glob(Path(pattern).name))
        )
        if not matched:
            problems.append(f"teams: no file matches {pattern!r} (relative to {base})")
        files.extend(matched)
    teams: list[Team] = []
    for path in dict.fromkeys(files):
        try:
            teams.append(load_team_file(path, task_labels))
        except ConfigError as exc:
            problems.append(str(exc))
    seen: dict[str, str] = {}
    for team in teams:
        if team.name in seen:
            problems.append(
                f"{team.origin}: team {team.name!r} is already defined in {seen[team.name]}"
            )
        seen[team.name] = team.origin
    return tuple(teams), problems
