"""What every command shares: the configuration option, redacted output, exit codes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from taskwarden.errors import TaskwardenError
from taskwarden.logs import Redactor

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

EXIT_OK = 0
EXIT_FAILED = 1
"""A poll, a connection or a delivery failed."""
EXIT_INVALID = 2
"""The configuration, the state or an argument is unusable."""

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="TASKWARDEN_CONFIG",
    required=True,
    help="YAML configuration file (or $TASKWARDEN_CONFIG).",
)


class Output:
    """Command output with every registered secret taken out (a URL a library echoes
    in an error, a key a server sent back)."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def echo(self, text: str = "", *, err: bool = False, nl: bool = True) -> None:
        click.echo(self.redactor(text), err=err, nl=nl)

    def error(self, exc: BaseException) -> None:
        self.echo(f"taskwarden: error: {exc}", err=True)


def output() -> Output:
    """The invocation's output, with the redactor the logging was configured with."""
    context = click.get_current_context(silent=True)
    root = context.find_root() if context is not None else None
    redactor = root.obj if root is not None and isinstance(root.obj, Redactor) else Redactor()
    return Output(redactor)


def call(body: Callable[[Output], int]) -> None:
    """Run a command body; a `TaskwardenError` is exit 2 with its message."""
    out = output()
    try:
        code = body(out)
    except TaskwardenError as exc:
        out.error(exc)
        sys.exit(EXIT_INVALID)
    sys.exit(code)


def run(body: Callable[[Output], Coroutine[Any, Any, int]]) -> None:
    """`call` for an async body."""
    out = output()
    try:
        code = asyncio.run(body(out))
    except TaskwardenError as exc:
        out.error(exc)
        sys.exit(EXIT_INVALID)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


class DurationType(click.ParamType):  # type: ignore[type-arg] # generic only in newer click stubs
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from taskwarden.config import parse_duration

        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(click.ParamType):  # type: ignore[type-arg] # generic only in newer click stubs
    """An ISO-8601 time (``2026-11-28T09:00:00Z``; without a zone: UTC)."""

    name = "time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from taskwarden.timeutil import parse_api_time

        try:
            return parse_api_time(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a time such as 2026-11-28T09:00:00Z", param, ctx)


OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    "output_format",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table with headers, or JSON.",
)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns as wide as their widest cell; the last column is not padded."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = []
    for row in (headers, *rows):
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*cells, str(row[-1])]).rstrip())
    return "\n".join(lines)
