"""Elastic Path PCM jobs payloads (pydantic at the boundary, lenient where the docs are).

Timestamps come with and without ``Z`` and with two or three fractional digits (naive ones
are UTC); unknown job types and statuses are kept verbatim; ``meta`` may be missing.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - pydantic resolves annotations at run time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskwarden.timeutil import parse_api_time


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _time(value: Any) -> Any:
    if isinstance(value, str):
        return parse_api_time(value) if value.strip() else None
    return value


class JobAttributes(_Lenient):
    type: str
    status: str
    created_at: datetime
    updated_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    _times = field_validator(
        "created_at", "updated_at", "started_at", "completed_at", mode="before"
    )(_time)


class JobMeta(_Lenient):
    x_request_id: str | None = None
    copied_from: str | None = None
    hierarchy_id: str | None = None
    file_locations: list[str] | None = None
    filter: str | None = None


class JobPayload(_Lenient):
    id: str = Field(min_length=1)
    type: str = "pim-job"
    attributes: JobAttributes
    meta: JobMeta | None = None


class JobListLinks(_Lenient):
    next: str | None = None


class JobListPayload(_Lenient):
    data: list[dict[str, Any]]
    """Raw entries: each is validated on its own, so one bad job cannot hide the rest."""
    links: JobListLinks | None = None


class JobDetailPayload(_Lenient):
    data: JobPayload


class JobErrorAttributes(_Lenient):
    message: str = ""


class JobErrorPayload(_Lenient):
    id: str | None = None
    attributes: JobErrorAttributes = JobErrorAttributes()


class JobErrorsPayload(_Lenient):
    data: list[JobErrorPayload] | None = None


class TokenPayload(_Lenient):
    access_token: str = Field(min_length=1)
    expires_in: float | None = None
    expires: float | None = None
    """Absolute expiry, epoch seconds."""
