from datetime import UTC, datetime, timedelta, timezone

import pytest

from taskwarden.timeutil import format_api_time, parse_api_time


def test_renders_the_documented_form() -> None:
    assert format_api_time(datetime(2022, 10, 1, tzinfo=UTC)) == "2022-10-01T00:00:00.000Z"
    moment = datetime(2022, 5, 1, 23, 0, 21, 123456, tzinfo=UTC)
    assert format_api_time(moment) == "2022-05-01T23:00:21.123Z"


def test_renders_other_zones_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2022, 10, 1, 2, 0, tzinfo=plus_two)
    assert format_api_time(moment) == "2022-10-01T00:00:00.000Z"


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2024-01-05T13:46:42.1Z", 100_000),
        ("2024-01-05T13:46:42.07Z", 70_000),
        ("2024-01-05T13:46:42.142Z", 142_000),
        ("2024-01-05T13:46:42.1234Z", 123_400),
        ("2024-01-05T13:46:42.123456Z", 123_456),
        ("2024-01-05T13:46:42.07", 70_000),
        ("2024-01-05T13:46:42", 0),
    ],
)
def test_parses_fractions_and_naive_as_utc(text: str, micro: int) -> None:
    parsed = parse_api_time(text)
    assert parsed == datetime(2024, 1, 5, 13, 46, 42, micro, tzinfo=UTC)
