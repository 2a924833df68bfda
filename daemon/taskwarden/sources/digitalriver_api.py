"""Digital River Product Admin API payloads, parsed at the boundary.

Strict about what a task cannot live without (``taskId``, ``taskStatus``,
``receivedTime``) and about what paging correctness depends on (a ``nextPage`` that is
there but unusable is an error, never a silent end of the listing); tolerant of the rest:
unknown enum values are kept verbatim, products carry ``id`` in examples and
``productId`` in the schema, ``finishedTime`` may be absent, naive timestamps are UTC, and
a field the alert can do without (``uri``, ``totalSize``, a product that is not an object)
is dropped when unusable instead of costing the task.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from taskwarden.sources.records import lenient
from taskwarden.timeutil import as_utc

VENDOR_ID = r"^[^\x00-\x1f\x7f]+$"
"""An identifier that goes into URLs, logs and messages: no control characters."""


def _objects_only(value: Any) -> Any:
    """``null`` is an empty list; entries that are not objects are dropped."""
    if value is None:
        return []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, dict)]
    return value


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
ObjectList = BeforeValidator(_objects_only)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class ProductPayload(_Payload):
    product_id: Annotated[str | None, lenient(None)] = Field(
        default=None, validation_alias=AliasChoices("productId", "id")
    )
    external_reference_id: Annotated[str | None, lenient(None)] = Field(
        default=None, alias="externalReferenceId"
    )
    product_type: Annotated[str | None, lenient(None)] = Field(default=None, alias="productType")


class ProblemPayload(_Payload):
    error_code: Annotated[str, lenient("")] = Field(
        default="", validation_alias=AliasChoices("errorCode", "code")
    )
    description: Annotated[str, lenient("")] = Field(
        default="", validation_alias=AliasChoices("description", "message", "detail")
    )


class TaskPayload(_Payload):
    task_id: str = Field(alias="taskId", min_length=1, max_length=256, pattern=VENDOR_ID)
    task_status: str = Field(alias="taskStatus", min_length=1, max_length=64, pattern=VENDOR_ID)
    request_type: Annotated[str, lenient("UNKNOWN")] = Field(
        default="UNKNOWN", alias="requestType", max_length=128
    )
    received_time: UtcDatetime = Field(alias="receivedTime")
    finished_time: Annotated[UtcDatetime | None, lenient(None)] = Field(
        default=None, alias="finishedTime"
    )
    products: Annotated[list[ProductPayload], ObjectList, lenient([])] = Field(default_factory=list)
    uri: Annotated[str | None, lenient(None)] = None


class TaskDetailPayload(TaskPayload):
    errors: Annotated[list[ProblemPayload], ObjectList, lenient([])] = Field(default_factory=list)
    deployment_errors: Annotated[list[ProblemPayload], ObjectList, lenient([])] = Field(
        default_factory=list, alias="deploymentErrors"
    )
    deployment_warnings: Annotated[list[ProblemPayload], ObjectList, lenient([])] = Field(
        default_factory=list, alias="deploymentWarnings"
    )


class CursorPayload(_Payload):
    starting_after: str | None = Field(default=None, alias="startingAfter", pattern=VENDOR_ID)
    ending_before: Annotated[str | None, lenient(None)] = Field(default=None, alias="endingBefore")


class SearchCriteriaPayload(_Payload):
    begin_received_time: Annotated[UtcDatetime | None, lenient(None)] = Field(
        default=None, alias="beginReceivedTime"
    )
    end_received_time: Annotated[UtcDatetime | None, lenient(None)] = Field(
        default=None, alias="endReceivedTime"
    )


def _null_is_empty(value: Any) -> Any:
    return [] if value is None else value


class TaskListPayload(_Payload):
    """The listing envelope. Items are validated one by one by the client, so that one
    unusable task is reported and skipped instead of blocking every later poll."""

    tasks: Annotated[list[Any], BeforeValidator(_null_is_empty)]
    total_size: Annotated[int | None, lenient(None)] = Field(default=None, alias="totalSize")
    next_page: CursorPayload | None = Field(default=None, alias="nextPage")
    previous_page: Annotated[CursorPayload | None, lenient(None)] = Field(
        default=None, alias="previousPage"
    )
    search_criteria: Annotated[SearchCriteriaPayload | None, lenient(None)] = Field(
        default=None, alias="searchCriteria"
    )
