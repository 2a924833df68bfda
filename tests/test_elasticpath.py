"""Elastic Path PCM jobs: parsing the documented examples, the token, pagination,
checkpointed polling and typed errors, against the simulator over loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from taskwarden.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
)
from taskwarden.model import Phase
from taskwarden.poller import poll_once
from taskwarden.simulator.faults import Fault
from taskwarden.sources.elasticpath import (
    ElasticPathClient,
    ElasticPathSource,
    job_from_payload,
)
from taskwarden.sources.elasticpath_api import JobListPayload, JobPayload
from taskwarden.state import open_state

from .alerting_harness import POLL
from .conftest import DATA, EP_CLIENT_ID, FAST_RETRY, T0

if TYPE_CHECKING:
    from pathlib import Path

    import httpx

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import ElasticPathJobs

SEEDS = DATA / "seeds"


def parse(name: str) -> list[JobPayload]:
    body = json.loads((SEEDS / name).read_text())
    return [JobPayload.model_validate(e) for e in JobListPayload.model_validate(body).data]


def test_documented_listing_parses_with_every_timestamp_spelling() -> None:
    jobs = [job_from_payload(j, "ep", "https://ep") for j in parse("ep_jobs_list.json")]
    assert [j.status for j in jobs] == ["success", "started", "success"]
    assert [j.phase for j in jobs] == [Phase.SUCCEEDED, Phase.RUNNING, Phase.SUCCEEDED]
    assert jobs[0].finished_time == datetime(2024, 1, 5, 13, 46, 42, 142000, tzinfo=UTC)
    assert jobs[1].finished_time is None
    assert ("x_request_id", "9ac00140-0037-4c6a-913c-b812196a2de6") in jobs[1].attributes
    assert ("filter", "eq(sku,product-1)") in jobs[2].attributes
    assert jobs[2].kind == "product-export"


def test_schema_example_naive_timestamps_are_utc_and_meta_is_kept() -> None:
    [job] = [job_from_payload(j, "ep", "https://ep") for j in parse("ep_jobs_schema_example.json")]
    assert job.received_time == datetime(2020, 9, 22, 9, 0, tzinfo=UTC)
    assert job.kind == "child-products"
    assert ("file_location", "string") in job.attributes
    assert ("hierarchy_id", "string") in job.attributes


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, InvalidRequestError),
        (404, NotFoundError),
        (422, InvalidRequestError),
        (500, ServerError),
    ],
)
async def test_documented_error_bodies_become_typed_errors(
    status: int, expected: type[Exception], http: httpx.AsyncClient
) -> None:
    bodies = {
        int(e["errors"][0]["status"]): e
        for e in json.loads((SEEDS / "ep_error_bodies.json").read_text())
    }

    async def handler(request: web.Request) -> web.Response:
        if request.path == "/oauth/access_token":
            return web.json_response({"access_token": "t", "expires_in": 3600})
        return web.json_response(bodies[status], status=status)

    from taskwarden.httpserver import serve_app

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app, host="127.0.0.1", port=0) as base_url:
        client = ElasticPathClient(
            http, base_url=base_url, client_id="c", client_secret="s", source_name="ep",
            retry=FAST_RETRY,
        )  # fmt: skip
        with pytest.raises(expected) as caught:
            await client.list_page(0)
    detail = bodies[status]["errors"][0].get("detail") or bodies[status]["errors"][0]["title"]
    assert detail in str(caught.value)


async def test_pages_newest_first_with_one_cached_token(
    ep_client: ElasticPathClient, ep_jobs: ElasticPathJobs, sim: Simulator
) -> None:
    for i in range(250):
        ep_jobs.add_job(status="success", created_ms=ep_jobs.sim.now_ms() - i * 1000)
    seen = []
    offset, more = 0, True
    while more:
        page = await ep_client.list_page(offset)
        assert not page.rejected
        seen.extend(page.jobs)
        offset += page.entries
        more = page.more
    assert len(seen) == 250
    assert len({j.task_id for j in seen}) == 250
    assert seen == sorted(seen, key=lambda j: j.received_time, reverse=True)
    assert sim.requests["ep.list"] == 3
    assert sim.requests["ep.token"] == 1


async def test_token_refreshed_once_on_401_and_before_expiry(
    http: httpx.AsyncClient, ep_jobs: ElasticPathJobs, sim: Simulator
) -> None:
    now = [0.0]
    client = ElasticPathClient(
        http, base_url=sim.base_url, client_id=EP_CLIENT_ID, client_secret=ep_jobs.client_secret,
        source_name="ep", retry=FAST_RETRY, clock=lambda: now[0],
    )  # fmt: skip
    await client.list_page(0)
    ep_jobs.revoke_tokens()  # revoked server-side: a 401, then one fresh token
    await client.list_page(0)
    assert sim.requests["ep.token"] == 2
    assert sim.requests["ep.list"] == 3
    now[0] += 3600 - 59  # inside the refresh margin: replaced before it expires
    await client.list_page(0)
    assert sim.requests["ep.token"] == 3
    assert sim.requests["ep.list"] == 4
    assert "client_secret='***'" in repr(client.auth)
    assert ep_jobs.client_secret not in repr(client.auth)


async def test_bad_client_credentials_name_the_source(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    client = ElasticPathClient(
        http, base_url=sim.base_url, client_id=EP_CLIENT_ID, client_secret="wrong",
        source_name="ep_eu", retry=FAST_RETRY,
    )  # fmt: skip
    with pytest.raises(
        AuthenticationError, match="client_id and client_secret of source 'ep_eu'"
    ) as caught:
        await client.list_page(0)
    assert ".." not in str(caught.value)
    assert sim.requests["ep.token"] == 1  # not retried


async def test_transient_faults_on_the_listing_are_retried(
    ep_client: ElasticPathClient, ep_jobs: ElasticPathJobs, sim: Simulator
) -> None:
    ep_jobs.add_job()
    sim.inject(Fault("rate_limit", remaining=1, retry_after=0, endpoint="ep.list"))
    sim.inject(Fault("server_error", remaining=1, status=503, endpoint="ep.list"))
    page = await ep_client.list_page(0)
    assert len(page.jobs) == 1
    assert sim.requests["ep.list"] == 3


async def test_checkpointed_polling_stops_paging_and_refreshes_open_jobs(
    tmp_path: Path, ep_client: ElasticPathClient, ep_jobs: ElasticPathJobs, sim: Simulator
) -> None:
    now_ms = sim.now_ms()
    for i in range(3000):  # ten hours of history, one job every 12 s
        ep_jobs.add_job(status="success", created_ms=now_ms - 12_000 * (i + 1))
    stuck = ep_jobs.add_job(status="started", created_ms=now_ms - 8 * 3600_000)
    store = open_state(tmp_path / "state.db", now=sim.now())
    source = ElasticPathSource(ep_client)
    try:
        first = await poll_once(source, store, POLL, sim.now())
        assert first.baseline
        assert sum(1 for e in first.events if type(e).__name__ == "TaskAppeared") == 3001
        sim.advance_clock(timedelta(minutes=1))
        new = ep_jobs.add_job(status="pending", job_type="price-import")
        before = dict(sim.requests)
        idle = await poll_once(source, store, POLL, sim.now())
        calls = {k: v - before.get(k, 0) for k, v in sim.requests.items()}
        # One page reaches past the checkpoint; the old open job is one GET.
        assert calls == {"ep.list": 1, "ep.detail": 1, "ep.token": 0}
        assert [e.task.task_id for e in idle.events if type(e).__name__ == "TaskAppeared"] == [
            new.job_id
        ]
        ep_jobs.set_status(stuck.job_id, "failed", errors=["Row 3: price is not a number"])
        ep_jobs.remove(new.job_id)
        sim.advance_clock(timedelta(minutes=1))
        later = await poll_once(source, store, POLL, sim.now())
        kinds = {(type(e).__name__, e.task.task_id) for e in later.events}
        assert ("StatusChanged", stuck.job_id) in kinds
        assert ("TaskGone", new.job_id) in kinds
        details = await source.details(stuck.job_id)
        assert [p.description for p in details.errors] == ["Row 3: price is not a number"]
    finally:
        store.close()


def test_unknown_types_and_statuses_are_kept() -> None:
    job = JobPayload.model_validate(
        {
            "id": "j1",
            "attributes": {
                "type": "catalog-release",
                "status": "queued",
                "created_at": "2026-03-01T12:00:00.5Z",
            },
        }
    )
    task = job_from_payload(job, "ep", "https://ep")
    assert (task.kind, task.status, task.phase) == ("catalog-release", "queued", Phase.UNKNOWN)
    assert task.received_time == T0 + timedelta(milliseconds=500)


async def test_cancelled_is_its_own_outcome_and_alerts_show_ep_meta(
    tmp_path: Path, ep_client: ElasticPathClient, ep_jobs: ElasticPathJobs, sim: Simulator
) -> None:
    from taskwarden.rules import FailedRule, Team
    from taskwarden.simulator.slack import SlackServer, running_slack

    from .alerting_harness import Harness, slack_bot

    team = Team(
        "catalog",
        rules=(
            FailedRule("exports-cancelled", "catalog", outcomes=frozenset({Phase.CANCELLED})),
            FailedRule("failures", "catalog"),
        ),
    )
    async with running_slack(SlackServer(min_interval=None)) as slack:
        store = open_state(tmp_path / "state.db", now=sim.now())
        h = Harness(
            sim=sim,
            source=ElasticPathSource(ep_client),
            store=store,
            notifiers={"slack": slack_bot(slack)},
            teams=(team,),
        )
        try:
            await h.cycle()
            export = ep_jobs.add_job(
                status="started",
                job_type="product-export",
                meta={
                    "x_request_id": "req-42",
                    "file_locations": ["https://files.example/export.csv"],
                },
            )
            await h.cycle()
            ep_jobs.set_status(export.job_id, "cancelled")
            await h.cycle()
        finally:
            store.close()
    [message] = slack.messages
    assert "product-export cancelled" in message.text
    assert "req-42" in message.raw
    assert "https://files.example/export.csv" in message.raw
