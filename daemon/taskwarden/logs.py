"""structlog configuration: JSON lines in production, readable console on a TTY.

Secrets registered with the `Redactor` are replaced by ``***`` in every log event,
whatever the level and wherever they appear in the rendered values; the same `Redactor`
serves the other sinks (state rows, notifications, CLI output).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sys
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import quote, urlsplit

import structlog

if TYPE_CHECKING:
    from collections.abc import Iterable

    from structlog.typing import EventDict, WrappedLogger

T = TypeVar("T")

_MIN_SECRET_LENGTH = 4
"""Shorter values would redact ordinary words; no real credential is that short."""
MASK = "***"


def derived_forms(secret: str) -> set[str]:
    """The secret and the forms it travels in: HTTP Basic's base64 of ``key:`` (how the
    Digital River key is sent), URL- and JSON-escaped copies, a webhook URL's path."""
    forms = {
        secret,
        base64.b64encode(f"{secret}:".encode()).decode(),
        base64.b64encode(secret.encode()).decode(),
        quote(secret, safe=""),
        quote(secret),
        json.dumps(secret)[1:-1],
    }
    parts = urlsplit(secret)
    if parts.scheme in ("http", "https") and len(parts.path) >= 8:
        forms.add(parts.path)
        forms.add(parts.path.lstrip("/"))
    return {f for f in forms if len(f) >= _MIN_SECRET_LENGTH}


class Redactor:
    """Replaces registered secrets (and their derived forms) by ``***``.

    One instance per process, built with the logging configuration and handed to every
    sink: log lines, rows written to the state, notification text, CLI output."""

    def __init__(self) -> None:
        self._secrets: frozenset[str] = frozenset()
        self._forms: tuple[str, ...] = ()

    def use(self, secrets: Iterable[str | None]) -> None:
        """The secrets of the configuration in force (after a reload: the new set)."""
        self._secrets = frozenset(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)
        forms = {form for secret in self._secrets for form in derived_forms(secret)}
        # Longest first: a secret's form is never half-replaced by a shorter one's.
        self._forms = tuple(sorted(forms, key=len, reverse=True))

    def add(self, secret: str | None) -> None:
        self.use((*self._secrets, secret))

    @property
    def active(self) -> bool:
        """Whether any secret is registered (not ``__bool__``: an empty redactor is still
        a redactor, and ``redactor or Redactor()`` must not replace it)."""
        return bool(self._forms)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def value(self, value: Any) -> Any:
        """Any log value: strings redacted, containers walked, other objects by their repr."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self(repr(value)) if self._forms else value

    def deep(self, obj: T) -> T:
        """A frozen dataclass (an alert, a notification) with every string redacted."""
        if not self._forms:
            return obj
        return cast("T", self._deep(obj))

    def _deep(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, tuple):
            return tuple(self._deep(item) for item in obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            changes = {f.name: self._deep(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return dataclasses.replace(obj, **changes)
        return obj


class RedactSecrets:
    """structlog processor: every value of every event through the `Redactor`."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if not self._redactor.active:
            return event_dict
        return {key: self._redactor.value(value) for key, value in event_dict.items()}


QUIET_LIBRARIES = ("httpx", "apscheduler.executors", "apscheduler.scheduler")


def configure_logging(
    *, json_output: bool | None = None, level: str = "info", redactor: Redactor | None = None
) -> Redactor:
    """Configure structlog (and stdlib logging, for libraries) once per process; returns
    the `Redactor` every log line passes through (register secrets on it)."""
    redactor = redactor if redactor is not None else Redactor()
    redact_secrets = RedactSecrets(redactor)
    if json_output is None:
        json_output = not sys.stderr.isatty()
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, redact_secrets, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # Chatty libraries stay at WARNING unless debugging: httpx logs every request URL at
    # INFO, APScheduler two lines per job run (the deliver job runs every few seconds).
    # Their warnings (missed runs, skipped overlapping runs) still come through.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if numeric_level <= logging.DEBUG else logging.WARNING
        )
    return redactor
