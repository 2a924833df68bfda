"""Label matchers in Alertmanager's grammar, matched in linear time.

A matcher list is ``name="value"``, ``name!="value"``, ``name=~"regex"``, ``name!~"regex"``,
separated by commas, optionally in braces: ``{team="catalog", kind=~"DEPLOY_.*"}``. Values
are double-quoted with backslash escapes (``\\"``, ``\\\\``, ``\\n``), or unquoted when they
hold none of ``{}!=~,\\"'`` nor whitespace. Anything else is refused with the column where
it went wrong: a silence that matches nothing by accident is a mistake worth stopping.

Regular expressions are anchored, as in Alertmanager, and run on RE2 (google-re2): linear
time, so no pattern can freeze the event loop on a crafted ERID. A pattern RE2 cannot
compile (backreferences, lookaround) is refused at load.

A label may have several values (a task with three products has three ``product_id``
values): a positive matcher holds when any value matches, a negative one when none does.
A missing label has no values, so ``name!="x"`` holds and ``name="x"`` does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import re2

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

Op = Literal["=", "!=", "=~", "!~"]
_OPS: tuple[Op, ...] = ("=~", "!~", "!=", "=")  # longest first
_RESERVED = frozenset("{}!=~,\\\"'")
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is ours to report, with its file and line
_RE2_OPTIONS.max_mem = 8 << 20


class MatcherError(ValueError):
    """A matcher that is not Alertmanager's grammar, or a regex RE2 cannot compile."""


def _is_name(text: str) -> bool:
    return (
        bool(text)
        and (text[0].isascii() and (text[0].isalpha() or text[0] == "_"))
        and all(c.isascii() and (c.isalnum() or c == "_") for c in text)
    )


def compile_regex(value: str) -> Any:
    """``value`` anchored (Alertmanager's ``^(?:value)$``) and compiled by RE2."""
    try:
        re2.compile(value, _RE2_OPTIONS)  # alone first: errors name the user's pattern
        return re2.compile(f"^(?:{value})$", _RE2_OPTIONS)
    except re2.error as exc:
        said = exc.args[0] if exc.args else b""
        reason = said.decode(errors="replace") if isinstance(said, bytes) else str(said)
        reason = reason.split(": ", 1)[0] or "cannot be compiled"
        raise MatcherError(
            f"regular expression {value!r} is not valid RE2 ({reason}); RE2 has no "
            "backreferences or lookaround, and matches in linear time"
        ) from None


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str
    regex: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Exactly one matcher; raises `MatcherError` with the reason and column."""
        found = parse_matchers(text)
        if len(found) != 1:
            raise MatcherError(f"matcher {text!r}: expected one matcher, found {len(found)}")
        return found[0]

    @classmethod
    def of(cls, name: str, op: Op, value: str) -> Matcher:
        if not _is_name(name):
            raise MatcherError(f"{name!r} is not a label name ([A-Za-z_][A-Za-z0-9_]*)")
        regex = compile_regex(value) if op in ("=~", "!~") else None
        return cls(name, op, value, regex)

    def matches(self, labels: Mapping[str, Sequence[str]]) -> bool:
        values = labels.get(self.name, ())
        if self.op == "=":
            return self.value in values
        if self.op == "!=":
            return self.value not in values
        hit = any(self.regex.fullmatch(v) is not None for v in values)
        if not values and self.op == "=~":
            hit = self.regex.fullmatch("") is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, message: str, at: int | None = None) -> MatcherError:
        column = (self.pos if at is None else at) + 1
        return MatcherError(f"matcher {self.text!r}, column {column}: {message}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def word(self, what: str) -> str:
        """A double-quoted string or an unquoted run without reserved characters."""
        self.skip_space()
        start = self.pos
        if self.peek() == '"':
            return self._quoted(start)
        if self.peek() == "'":
            raise self.fail(f'{what} in single quotes: Alertmanager quotes with "')
        while (
            self.pos < len(self.text)
            and not self.text[self.pos].isspace()
            and self.text[self.pos] not in _RESERVED
        ):
            self.pos += 1
        if self.pos == start:
            found = repr(self.text[self.pos]) if self.pos < len(self.text) else "the end"
            raise self.fail(f"expected {what}, found {found}")
        return self.text[start : self.pos]

    def _quoted(self, start: int) -> str:
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == "\\":
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if escaped not in _ESCAPES:
                    raise self.fail(f"unknown escape \\{escaped}")
                out.append(_ESCAPES[escaped])
                self.pos += 2
                continue
            out.append(char)
            self.pos += 1
        raise self.fail("the quoted value is never closed", at=start)

    def op(self) -> Op:
        self.skip_space()
        for op in _OPS:
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                return op
        raise self.fail("expected an operator: =, !=, =~ or !~")


def parse_matchers(text: str) -> tuple[Matcher, ...]:
    """Every matcher in ``text``: ``{a="b", c=~"d"}``, ``a="b",c=~"d"`` or ``a="b"``."""
    scan = _Scanner(text)
    braced = scan.take("{")
    found: list[Matcher] = []
    while scan.peek() not in ("", "}"):
        name_at = scan.pos
        name = scan.word("a label name")
        if not _is_name(name):
            raise scan.fail(f"{name!r} is not a label name", at=name_at)
        op = scan.op()
        after_op = scan.peek()
        if after_op in ("=", "~", "!"):
            raise scan.fail(f"unexpected {after_op!r} after the operator {op}")
        scan.skip_space()
        value_at = scan.pos
        value = scan.word("a value")
        try:
            found.append(Matcher.of(name, op, value))
        except MatcherError as exc:
            raise scan.fail(str(exc), at=value_at) from None
        if not scan.take(","):
            break
    if braced and not scan.take("}"):
        raise scan.fail("expected , or } (the brace is never closed)")
    if not braced and scan.peek() == "}":
        raise scan.fail("} without {")
    if scan.peek() != "":
        raise scan.fail(f"unexpected {scan.peek()!r}: separate matchers with commas")
    if not found:
        raise MatcherError(f"matcher {text!r}: no matcher in it")
    return tuple(found)


def parse_all(texts: Iterable[str]) -> tuple[Matcher, ...]:
    """The matchers of every text in a list (each may hold several)."""
    return tuple(m for text in texts for m in parse_matchers(text))


def match_all(matchers: Iterable[Matcher], labels: Mapping[str, Sequence[str]]) -> bool:
    return all(m.matches(labels) for m in matchers)


def single_valued(labels: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    return {name: (value,) for name, value in labels}
