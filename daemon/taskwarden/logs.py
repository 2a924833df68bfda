"""structlog configuration: JSON lines in production, readable console on a TTY.

Secrets registered with `register_secret` are replaced by ``***`` in every log event,
whatever the level and wherever they appear in the rendered values.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

_secrets: set[str] = set()
_MIN_SECRET_LENGTH = 4
"""Shorter values would redact ordinary words; no real credential is that short."""


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_SECRET_LENGTH:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(repr(value)) if _secrets else value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    if not _secrets:
        return event_dict
    return {key: _redact_value(value) for key, value in event_dict.items()}


QUIET_LIBRARIES = ("httpx", "apscheduler.executors", "apscheduler.scheduler")


def configure_logging(*, json_output: bool | None = None, level: str = "info") -> None:
    """Configure structlog (and stdlib logging, for libraries) once per process."""
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
