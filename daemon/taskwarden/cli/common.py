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
    from collections.abc import Callable, Coroutine

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
