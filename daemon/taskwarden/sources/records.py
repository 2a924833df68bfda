"""One unusable record never blocks the rest: parse each on its own, reject what fails.

A vendor listing is a list of records; a record that cannot be used (a missing id, a date
no calendar has, ``null`` where an object belongs) is logged with its position, counted by
reason and skipped, whatever exception its parsing raises. Everything else on the page,
and every later page, is still read.

Pages are bounded per poll cycle (`PageBudget`): a server that keeps handing out cursors
or pages costs at most ``max_pages`` requests and that many pages of memory.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import ValidationError, ValidatorFunctionWrapHandler, WrapValidator

from taskwarden.errors import MalformedResponseError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

log = structlog.get_logger(__name__)

T = TypeVar("T")
_EXCERPT = 120


def lenient(default: Any) -> WrapValidator:
    """A field the task can live without: an unusable value becomes ``default``."""

    def fallback(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return default

    return WrapValidator(fallback)


def reject_reason(exc: BaseException, record: object) -> str:
    """A short, bounded label for the metric: ``receivedTime:value_error``, ``not_an_object``."""
    if not isinstance(record, dict):
        return "not_an_object"
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if errors:
            first = errors[0]
            where = str(first["loc"][0]) if first["loc"] else "record"
            return f"{where}:{first['type']}"[:60]
    return type(exc).__name__


def summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return summarise(exc)
    return f"{type(exc).__name__}: {exc}"[:200]


def parse_each(
    records: Iterable[Any],
    parse: Callable[[Any], T],
    *,
    source: str,
    page: int,
    id_key: str,
) -> tuple[list[T], Counter[str]]:
    """Every record ``parse`` accepts, and the rejected ones counted by reason."""
    parsed: list[T] = []
    rejected: Counter[str] = Counter()
    for index, record in enumerate(records):
        try:
            parsed.append(parse(record))
        except Exception as exc:  # noqa: BLE001 - whatever one record raises, the rest are read
            reason = reject_reason(exc, record)
            rejected[reason] += 1
            record_id = record.get(id_key) if isinstance(record, dict) else None
            log.warning(
                "api.record_rejected",
                source=source,
                page=page,
                index=index,
                record_id=repr(record_id)[:_EXCERPT] if record_id is not None else None,
                reason=reason,
                error=_describe(exc),
            )
    return parsed, rejected


class PageBudget:
    """Pages one poll cycle may read, across all its listings."""

    def __init__(self, max_pages: int, *, source: str) -> None:
        self.max_pages = max_pages
        self.used = 0
        self._source = source
        self._setting = f"sources.{source}.max_pages_per_cycle"

    def take(self) -> int:
        """Count one more page (its number, from 1); raises once the budget is spent."""
        if self.used >= self.max_pages:
            raise MalformedResponseError(
                f"the listing did not end within {self.max_pages:,} pages in one cycle; "
                f"if the backlog is real, raise {self._setting}",
                source=self._source,
            )
        self.used += 1
        return self.used
