"""Reading YAML configuration files strictly, and saying where a problem is.

Every problem is a `ConfigError` that names the file and the line: a file that is not
UTF-8 (with the line of the first bad byte), YAML that does not parse, and a key written
twice in one mapping (PyYAML silently keeps the last; here both lines are named).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args, get_origin

import yaml
from pydantic import BaseModel
from yaml.constructor import ConstructorError

from taskwarden.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice in the same mapping (lines {first[key]} "
                    f"and {line}); remove one",
                    key_node.start_mark,
                )
            first[key] = line
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True, slots=True)
class YamlDocument:
    path: Path
    data: Any
    root: yaml.Node | None
    """The composed node tree: where each key is (`line_of`)."""

    def line_of(self, loc: Sequence[int | str]) -> int | None:
        return line_of(self.root, loc)

    def where(self, loc: Sequence[int | str]) -> str:
        """``file:line`` of the deepest key along ``loc`` that the file has."""
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line is not None else str(self.path)


def load_yaml(path: Path) -> YamlDocument:
    """The parsed file with its node tree; raises `ConfigError` naming file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    try:
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f":{mark.line + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{path}{at}: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return YamlDocument(path, data, root)


def line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The YAML line (1-based) of the deepest key along ``loc`` that the tree has."""
    line = None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            found = next(((k, v) for k, v in node.value if k.value == str(step)), None)
            if found is None:
                break
            line = found[0].start_mark.line + 1
            node = found[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value)
        ):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            break
    return line


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``; did you mean 'team'?`` when a candidate is close, else nothing."""
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def fields_at(root: type[BaseModel], loc: Sequence[int | str]) -> set[str]:
    """The setting names (and aliases) of the section at ``loc`` of a pydantic model: what
    a misspelled key may have meant. Unions (a source's ``kind``) merge their members."""
    names: set[str] = set()
    for model in _members(annotations_at(root, loc)):
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name, info in model.model_fields.items():
                names.add(info.alias if isinstance(info.alias, str) else name)
    return names


def annotations_at(root: type[BaseModel], loc: Sequence[int | str]) -> list[Any]:
    """The type annotations of the setting at ``loc`` (several under a union)."""
    current: list[Any] = [root]
    for step in loc:
        found: list[Any] = []
        for model in _members(current):
            if isinstance(model, type) and issubclass(model, BaseModel):
                for name, info in model.model_fields.items():
                    if step in (name, info.alias):
                        found.append(info.annotation)
            elif get_origin(model) in (list, tuple) and isinstance(step, int):
                found.extend(get_args(model)[:1])
            elif get_origin(model) is dict and isinstance(step, str):
                found.extend(get_args(model)[1:2])
        # A step no member knows is a union's tag in pydantic's location: stay put.
        current = found or current
    return current


def _members(annotations: list[Any]) -> list[Any]:
    """Annotations with Optional / Union / Annotated unwrapped (containers kept)."""
    out: list[Any] = []
    pending = list(annotations)
    while pending:
        current = pending.pop()
        if get_origin(current) in (list, tuple, dict) or (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            out.append(current)
        else:
            pending.extend(get_args(current))
    return out


def explain(error: Any, root: type[BaseModel]) -> str:
    """A pydantic error's message, said for a person: no "Value error, " class prefix, and
    a did-you-mean for a key that is not a setting."""
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = list(error["loc"])
    if error.get("type") == "extra_forbidden" and loc and isinstance(loc[-1], str):
        known = fields_at(root, loc[:-1])
        return f"not a setting here{did_you_mean(loc[-1], known)}"
    return message
