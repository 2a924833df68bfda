"""UTC timestamps as the vendor APIs write and read them."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    """Naive timestamps from the APIs are UTC; aware ones are converted to UTC.

    Raises ValueError (not OverflowError) for a moment whose UTC form has no year in
    1..9999 (``9999-12-31T23:59:59-01:00``): callers validating vendor data reject it."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} is out of the representable range") from None


def format_api_time(moment: datetime) -> str:
    """Render exactly as the Digital River docs do: ``2022-10-01T00:00:00.000Z``."""
    utc = as_utc(moment)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_api_time(text: str) -> datetime:
    """Parse an ISO-8601 timestamp with 0-6 fractional digits, with or without ``Z``."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    return as_utc(datetime.fromisoformat(cleaned))


def to_epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch; how timestamps are stored and compared."""
    return round(as_utc(moment).timestamp() * 1000)


def from_epoch_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def utc_now() -> datetime:
    """The one place that reads the wall clock; everything else receives ``now``."""
    return datetime.now(tz=UTC)
