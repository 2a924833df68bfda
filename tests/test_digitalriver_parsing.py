"""Every example response in the vendor docs parses; odd-but-real payloads are tolerated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from taskwarden.errors import MalformedResponseError
from taskwarden.model import Phase
from taskwarden.sources.digitalriver import parse_listing
from taskwarden.sources.digitalriver_api import TaskDetailPayload

from .conftest import DATA

SEEDS = DATA / "seeds"
LISTINGS = {
    "dr_guide_all_tasks.json": 22,
    "dr_glossary_page1.json": 50,
    "dr_glossary_page2.json": 50,
    "dr_glossary_page3.json": 50,
    "dr_glossary_page4.json": 14,
    "dr_reference_list.json": 1,
}


@pytest.mark.parametrize(("name", "count"), sorted(LISTINGS.items()))
def test_every_documented_listing_parses(name: str, count: int) -> None:
    body = json.loads((SEEDS / name).read_text())
    page = parse_listing(body, "dr")
    assert len(page.tasks) == count
    assert not page.rejected
    assert all(t.received_time.tzinfo is UTC for t in page.tasks)
    assert [t.task_id for t in page.tasks] == [t["taskId"] for t in body["tasks"]]


def test_documented_listing_details() -> None:
    page = parse_listing(json.loads((SEEDS / "dr_guide_all_tasks.json").read_text()), "dr")
    first = page.tasks[0]
    assert first.status == "PUBLISHED"
    assert first.phase is Phase.OPEN
    assert first.finished_time is None
    assert first.products == ()
    failed = next(t for t in page.tasks if t.task_id == "a3362e04-25a9-47fe-80d3-661c30d6511d")
    assert failed.phase is Phase.FAILED
    assert failed.kind == "DELETE_LOCALE"
    # Examples carry "id"; the schema says "productId": both land in product_id.
    assert failed.products[0].product_id == "51473680080"
    assert page.window_end == datetime(2022, 11, 28, 14, 43, 20, 524000, tzinfo=UTC)


def test_reference_cursors_are_read() -> None:
    page = parse_listing(json.loads((SEEDS / "dr_reference_list.json").read_text()), "dr")
    assert page.next_cursor == "aaaaaaaa-aaaa-bbbb-cccc-ea513d1afa82"
    assert page.previous_cursor == "zzzzzzzz-aaaa-bbbb-cccc-ea513d1afa82"
    assert page.tasks[0].products[0].product_id == "text"


def test_documented_detail_parses_with_problem_lists() -> None:
    payload = TaskDetailPayload.model_validate(
        json.loads((SEEDS / "dr_reference_detail.json").read_text())
    )
    assert payload.task_id == "d8a81162-aaaa-bbbb-cccc-ea513d1afa82"
    assert payload.errors[0].error_code == "text"
    assert len(payload.deployment_errors) == 1
    assert len(payload.deployment_warnings) == 1


def test_the_example_with_a_trailing_comma_is_invalid_json() -> None:
    text = (SEEDS / "dr_guide_completed_trailing_comma.json.txt").read_text()
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def _listing(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": list(tasks), "totalSize": len(tasks)}


def test_unknown_values_are_kept_and_numbers_become_strings() -> None:
    body = _listing(
        {
            "taskId": "t-1",
            "taskStatus": "QUEUED_FOR_REVIEW",
            "requestType": "MERGE_CATALOGUES",
            "receivedTime": "2024-01-05T13:46:42.07",
            "products": [{"productId": 5147, "productType": "BUNDLE"}],
            "somethingNew": {"nested": True},
        }
    )
    task = parse_listing(body, "dr").tasks[0]
    assert task.status == "QUEUED_FOR_REVIEW"
    assert task.phase is Phase.UNKNOWN
    assert task.kind == "MERGE_CATALOGUES"
    assert task.products[0].product_id == "5147"
    assert task.products[0].product_type == "BUNDLE"
    assert task.received_time == datetime(2024, 1, 5, 13, 46, 42, 70000, tzinfo=UTC)


def test_null_lists_are_empty() -> None:
    body = _listing(
        {
            "taskId": "t",
            "taskStatus": "FAILED",
            "receivedTime": "2024-01-05T13:46:42Z",
            "products": None,
        }
    )
    assert parse_listing(body, "dr").tasks[0].products == ()


def test_an_unusable_task_is_skipped_logged_and_counted() -> None:
    good = {"taskId": "ok", "taskStatus": "FAILED", "receivedTime": "2024-01-05T13:46:42Z"}
    bad = {"taskId": "broken", "taskStatus": "FAILED", "receivedTime": "yesterday"}
    with structlog.testing.capture_logs() as logs:
        page = parse_listing(_listing(bad, good), "dr")
    assert [t.task_id for t in page.tasks] == ["ok"]
    assert page.rejected.total() == 1
    rejected = [e for e in logs if e["event"] == "api.record_rejected"]
    assert rejected[0]["record_id"] == "'broken'"
    assert rejected[0]["index"] == 0
    assert "receivedTime" in rejected[0]["reason"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"tasks": "nope"}, "tasks"),
        ({"items": []}, "tasks"),
        ([1, 2, 3], "body"),
        ({"tasks": [], "nextPage": "page-2"}, "nextPage"),
    ],
)
def test_wrong_envelope_is_an_error_that_names_the_problem(body: Any, named: str) -> None:
    with pytest.raises(MalformedResponseError, match=named):
        parse_listing(body, "dr")


def test_a_field_the_listing_can_do_without_never_costs_the_page() -> None:
    """A wrong-typed ``totalSize`` (or ``previousPage``) is dropped; the tasks are read."""
    good = {"taskId": "ok", "taskStatus": "FAILED", "receivedTime": "2024-01-05T13:46:42Z"}
    body = {**_listing(good), "totalSize": "many", "previousPage": 7}
    page = parse_listing(body, "dr")
    assert [t.task_id for t in page.tasks] == ["ok"]
    assert page.total_size is None
