"""Elastic Path PCM jobs payloads (pydantic at the boundary, lenient where the docs are).

Timestamps come with and without ``Z`` and with two or three fractional digits (naive ones
are UTC); unknown job types and statuses are kept verbatim; ``meta`` may be missing, and
an unusable ``meta`` field is dropped rather than costing the job. What a job cannot live
without (``id``, ``type``, ``status``, ``created_at``) is strict: a job missing one is
rejected on its own (see `taskwarden.sources.records`).
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - pydantic resolves annotations at run time
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from taskwarden.sources.records import lenient
from taskwarden.timeutil import parse_api_time

VENDOR_ID = r"^[^\x00-\x1f\x7f]+$"
"""An identifier that goes into URLs, logs and messages: no control characters."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _time(value: Any) -> Any:
    if isinstance(value, str):
        return parse_api_time(value) if value.strip() else None
    return value


def _optional_time(value: Any) -> Any:
    """A timestamp the job can do without: unreadable is absent."""
    try:
        return _time(value)
    except ValueError:
        return None


def _strings_only(value: Any) -> Any:
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return value


class JobAttributes(_Lenient):
    type: str = Field(min_length=1, max_length=128, pattern=VENDOR_ID)
    status: str = Field(min_length=1, max_length=64, pattern=VENDOR_ID)
    created_at: datetime
    updated_at: Annotated[datetime | None, lenient(None)] = None
    started_at: Annotated[datetime | None, lenient(None)] = None
    completed_at: Annotated[datetime | None, lenient(None)] = None

    _created = field_validator("created_at", mode="before")(_time)
    _others = field_validator("updated_at", "started_at", "completed_at", mode="before")(
        _optional_time
    )


class JobMeta(_Lenient):
    x_request_id: Annotated[str | None, lenient(None)] = None
    copied_from: Annotated[str | None, lenient(None)] = None
    hierarchy_id: Annotated[str | None, lenient(None)] = None
    file_locations: Annotated[list[str] | None, BeforeValidator(_strings_only), lenient(None)] = (
        None
    )
    filter: Annotated[str | None, lenient(None)] = None


class JobPayload(_Lenient):
    id: str = Field(min_length=1, max_length=256, pattern=VENDOR_ID)
    type: Annotated[str, lenient("pim-job")] = "pim-job"
    attributes: JobAttributes
    meta: Annotated[JobMeta | None, lenient(None)] = None


class JobListLinks(_Lenient):
    next: Annotated[str | None, lenient(None)] = None


def _null_is_empty(value: Any) -> Any:
    return [] if value is None else value


class JobListPayload(_Lenient):
    data: Annotated[list[Any], BeforeValidator(_null_is_empty)]
    """Raw entries: each is validated on its own, so one bad job cannot hide the rest."""
    links: Annotated[JobListLinks | None, lenient(None)] = None


class JobDetailPayload(_Lenient):
    data: JobPayload


class JobErrorAttributes(_Lenient):
    message: Annotated[str, lenient("")] = ""


class JobErrorPayload(_Lenient):
    id: Annotated[str | None, lenient(None)] = None
    attributes: Annotated[JobErrorAttributes, lenient(JobErrorAttributes())] = JobErrorAttributes()


def _objects_only(value: Any) -> Any:
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return value


class JobErrorsPayload(_Lenient):
    data: Annotated[list[JobErrorPayload] | None, BeforeValidator(_objects_only)] = None


class TokenPayload(_Lenient):
    access_token: str = Field(min_length=1)
    expires_in: float | None = None
    expires: float | None = None
    """Absolute expiry, epoch seconds."""
