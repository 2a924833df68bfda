"""Digital River Product Admin API payloads, parsed at the boundary.

Strict about what a task cannot live without (``taskId``, ``taskStatus``,
``receivedTime``); tolerant of what vendors change or document inconsistently: unknown
enum values are kept verbatim, products carry ``id`` in examples and ``productId`` in the
schema, ``finishedTime`` may be absent, naive timestamps are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from taskwarden.timeutil import as_utc


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
LenientList = BeforeValidator(_none_as_empty)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)


class ProductPayload(_Payload):
    product_id: str | None = Field(default=None, validation_alias=AliasChoices("productId", "id"))
    external_reference_id: str | None = Field(default=None, alias="externalReferenceId")
    product_type: str | None = Field(default=None, alias="productType")


class ProblemPayload(_Payload):
    error_code: str = Field(default="", validation_alias=AliasChoices("errorCode", "code"))
    description: str = Field(
        default="", validation_alias=AliasChoices("description", "message", "detail")
    )


class TaskPayload(_Payload):
    task_id: str = Field(alias="taskId", min_length=1)
    task_status: str = Field(alias="taskStatus", min_length=1)
    request_type: str = Field(default="UNKNOWN", alias="requestType")
    received_time: UtcDatetime = Field(alias="receivedTime")
    finished_time: UtcDatetime | None = Field(default=None, alias="finishedTime")
    products: Annotated[list[ProductPayload], LenientList] = Field(default_factory=list)
    uri: str | None = None


class TaskDetailPayload(TaskPayload):
    errors: Annotated[list[ProblemPayload], LenientList] = Field(default_factory=list)
    deployment_errors: Annotated[list[ProblemPayload], LenientList] = Field(
        default_factory=list, alias="deploymentErrors"
    )
    deployment_warnings: Annotated[list[ProblemPayload], LenientList] = Field(
        default_factory=list, alias="deploymentWarnings"
    )


class CursorPayload(_Payload):
    starting_after: str | None = Field(default=None, alias="startingAfter")
    ending_before: str | None = Field(default=None, alias="endingBefore")


class SearchCriteriaPayload(_Payload):
    begin_received_time: UtcDatetime | None = Field(default=None, alias="beginReceivedTime")
    end_received_time: UtcDatetime | None = Field(default=None, alias="endReceivedTime")


class TaskListPayload(_Payload):
    """The listing envelope. Items are validated one by one by the client, so that one
    unusable task is reported and skipped instead of blocking every later poll."""

    tasks: list[dict[str, Any]]
    total_size: int | None = Field(default=None, alias="totalSize")
    next_page: CursorPayload | None = Field(default=None, alias="nextPage")
    previous_page: CursorPayload | None = Field(default=None, alias="previousPage")
    search_criteria: SearchCriteriaPayload | None = Field(default=None, alias="searchCriteria")
