"""Label matchers in Alertmanager's syntax: ``name="v"``, ``name!="v"``, ``name=~"re"``,
``name!~"re"``. Regular expressions are anchored, as in Alertmanager.

A label may have several values (a task with three products has three ``product_id``
values): a positive matcher holds when any value matches, a negative one when none does.
A missing label has no values, so ``name!="x"`` holds and ``name="x"`` does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Op = Literal["=", "!=", "=~", "!~"]
_SYNTAX = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Raises ValueError with the reason (shown with the file and rule at load)."""
        match = _SYNTAX.match(text)
        if match is None:
            raise ValueError(
                f'matcher {text!r} is not of the form name="value", name!="value", '
                'name=~"regex" or name!~"regex"'
            )
        name, op, raw = match.groups()
        value = _unquote(raw)
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(f"(?:{value})\\Z")
            except re.error as exc:
                raise ValueError(f"matcher {text!r}: invalid regular expression: {exc}") from None
        return cls(name, op, value, pattern)  # type: ignore[arg-type]

    def matches(self, labels: Mapping[str, Sequence[str]]) -> bool:
        values = labels.get(self.name, ())
        if self.op == "=":
            return self.value in values
        if self.op == "!=":
            return self.value not in values
        assert self.pattern is not None
        hit = any(self.pattern.match(v) for v in values)
        if not values and self.op == "=~":
            hit = self.pattern.match("") is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op}"{escaped}"'


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        body = raw[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    return raw


def parse_all(texts: Iterable[str]) -> tuple[Matcher, ...]:
    return tuple(Matcher.parse(t) for t in texts)


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, Sequence[str]]) -> bool:
    return all(m.matches(labels) for m in matchers)


def single_valued(labels: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    return {name: (value,) for name, value in labels}
