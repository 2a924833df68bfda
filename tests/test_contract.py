"""One contract suite over both sources: the same rules, routes and receivers must behave
the same whether the task is a Digital River task or an Elastic Path PCM job."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import pytest

from taskwarden.alerts import Severity
from taskwarden.errors import AuthenticationError, ServerError
from taskwarden.matchers import parse_all
from taskwarden.rules import BurstRule, FailedRule, StuckRule, Team
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.sources.elasticpath import ElasticPathSource

from .alerting_harness import Harness, failed_with, slack_bot, slack_hook

if TYPE_CHECKING:
    from taskwarden.simulator import Simulator
    from taskwarden.simulator.elasticpath import ElasticPathJobs
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.sources.base import Source
    from taskwarden.sources.digitalriver import DigitalRiverClient
    from taskwarden.sources.elasticpath import ElasticPathClient
    from taskwarden.state import SqliteStateStore


class Vendor(Protocol):
    """What a contract test needs to make happen on one vendor's side."""

    name: str
    critical_kind: str
    other_kind: str
    details_endpoint: str
    problem_label: str
    """How an error detail is introduced in Slack (before its text)."""

    def source(self) -> Source: ...
    def start(self, kind: str) -> str: ...
    def fail(self, task_id: str, message: str = "boom") -> None: ...
    def complete(self, task_id: str) -> None: ...
    def break_credentials(self) -> None: ...


@dataclass
class DigitalRiver:
    sim: Simulator
    client: DigitalRiverClient
    name: str = "dr"
    critical_kind: str = "DEPLOY_PRODUCT"
    other_kind: str = "UPDATE_PRODUCT"
    details_endpoint: str = "dr.detail"
    problem_label: str = "deployment error `E1`: "

    def source(self) -> Source:
        return DigitalRiverSource(self.client)

    def start(self, kind: str) -> str:
        return self.sim.add_task(status="PROCESSING", request_type=kind).task_id

    def fail(self, task_id: str, message: str = "boom") -> None:
        self.sim.set_status(
            task_id, "FAILED", deployment_errors=[{"code": "E1", "description": message}]
        )

    def complete(self, task_id: str) -> None:
        self.sim.set_status(task_id, "COMPLETED")

    def break_credentials(self) -> None:
        self.sim.api_key = "rotated"


@dataclass
class ElasticPath:
    sim: Simulator
    jobs: ElasticPathJobs
    client: ElasticPathClient
    name: str = "ep"
    critical_kind: str = "product-import"
    other_kind: str = "product-export"
    details_endpoint: str = "ep.errors"
    problem_label: str = "• error: "  # job errors have a message, no code

    def source(self) -> Source:
        return ElasticPathSource(self.client)

    def start(self, kind: str) -> str:
        return self.jobs.add_job(status="started", job_type=kind).job_id

    def fail(self, task_id: str, message: str = "boom") -> None:
        self.jobs.set_status(task_id, "failed", errors=[message])

    def complete(self, task_id: str) -> None:
        self.jobs.set_status(task_id, "success")

    def break_credentials(self) -> None:
        self.jobs.client_secret = "rotated"
        self.jobs.revoke_tokens()


def team_for(vendor: Vendor) -> Team:
    return Team(
        "catalog",
        rules=(
            FailedRule(
                "critical-failures",
                "catalog",
                matchers=parse_all([f'kind="{vendor.critical_kind}"']),
                severity=Severity.CRITICAL,
            ),
            FailedRule("failures", "catalog"),
            StuckRule("stuck", "catalog", after=timedelta(hours=2)),
            BurstRule("burst", "catalog", threshold=30, window=timedelta(minutes=15)),
        ),
    )


@pytest.fixture(params=["digitalriver", "elasticpath"])
def vendor(
    request: pytest.FixtureRequest,
    sim: Simulator,
    dr_client: DigitalRiverClient,
    ep_jobs: ElasticPathJobs,
    ep_client: ElasticPathClient,
) -> Vendor:
    if request.param == "digitalriver":
        return DigitalRiver(sim, dr_client)
    return ElasticPath(sim, ep_jobs, ep_client)


@pytest.fixture
def harness(vendor: Vendor, sim: Simulator, store: SqliteStateStore, slack: SlackServer) -> Harness:
    return Harness(
        sim=sim,
        source=vendor.source(),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(team_for(vendor),),
    )


async def test_failure_alerts_once_with_severity_and_vendor_errors(
    vendor: Vendor, harness: Harness, slack: SlackServer
) -> None:
    await harness.cycle()
    critical, other = vendor.start(vendor.critical_kind), vendor.start(vendor.other_kind)
    await harness.cycle()
    vendor.fail(critical, "price missing for USD")
    vendor.fail(other)
    await harness.cycle()
    await harness.cycle()
    texts = sorted(m.text for m in slack.messages)
    assert len(texts) == 2
    assert any(t.startswith("[CRITICAL]") and vendor.critical_kind in t for t in texts)
    assert any(t.startswith("[WARNING]") and vendor.other_kind in t for t in texts)
    rendered = json.dumps([m.blocks for m in slack.messages], ensure_ascii=False)
    assert f"{vendor.problem_label}`price missing for USD`" in rendered
    for _ in range(2):  # never told again
        await harness.cycle()
    assert len(slack.messages) == 2


async def test_alert_goes_out_when_details_fail(
    vendor: Vendor, harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    await harness.cycle()
    task_id = vendor.start(vendor.critical_kind)
    await harness.cycle()
    vendor.fail(task_id)
    sim.inject(Fault("server_error", remaining=100, endpoint=vendor.details_endpoint))
    await harness.cycle()
    [message] = slack.messages
    assert "Error details unavailable" in message.raw


async def test_stuck_fires_and_resolves_in_its_thread(
    vendor: Vendor, harness: Harness, slack: SlackServer
) -> None:
    await harness.cycle()
    task_id = vendor.start(vendor.other_kind)
    await harness.cycle()
    await harness.cycle(timedelta(hours=2))
    [first] = slack.messages
    assert "stuck in" in first.text
    vendor.complete(task_id)
    await harness.cycle(timedelta(minutes=10))
    resolved = slack.messages[-1]
    assert resolved.text.startswith("[RESOLVED]")
    assert resolved.thread_ts == first.ts


async def test_burst_is_one_incident(vendor: Vendor, harness: Harness, slack: SlackServer) -> None:
    await harness.cycle()
    ids = [vendor.start(vendor.other_kind) for _ in range(40)]
    await harness.cycle()
    for task_id in ids:
        vendor.fail(task_id)
    await harness.cycle()
    [burst] = slack.messages
    assert "Failure burst: 40 failed tasks" in burst.text


async def test_outage_and_rejected_credentials_alert_ops(
    vendor: Vendor, harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    await harness.cycle()
    sim.inject(Fault("server_error", remaining=10_000, status=503))
    for _ in range(4):
        assert failed_with(await harness.cycle(timedelta(minutes=5)), ServerError)
    [down] = slack.messages
    assert f"{vendor.name}: polling has failed for 15m" in down.text
    sim.faults.clear()
    await harness.cycle()
    assert slack.messages[-1].text.startswith("[RESOLVED]")
    vendor.break_credentials()
    assert failed_with(await harness.cycle(), AuthenticationError)
    assert "rejects taskwarden's credentials" in slack.messages[-1].text


async def test_two_sources_in_one_daemon(  # noqa: PLR0917 - pytest fixtures
    sim: Simulator,
    dr_client: DigitalRiverClient,
    ep_jobs: ElasticPathJobs,
    ep_client: ElasticPathClient,
    store: SqliteStateStore,
    slack: SlackServer,
) -> None:
    dr, ep = DigitalRiver(sim, dr_client), ElasticPath(sim, ep_jobs, ep_client)
    notifiers = {"slack": slack_bot(slack), "ops": slack_hook(slack)}
    team = Team("catalog", rules=(FailedRule("failures", "catalog"),))
    harnesses = [
        Harness(sim=sim, source=v.source(), store=store, notifiers=notifiers, teams=(team,))
        for v in (dr, ep)
    ]
    for h in harnesses:
        await h.cycle(timedelta(0))
    ids = [dr.start(dr.other_kind), ep.start(ep.other_kind)]
    sim.advance_clock(timedelta(minutes=1))
    for h in harnesses:
        await h.cycle(timedelta(0))
    dr.fail(ids[0])
    ep.fail(ids[1])
    sim.advance_clock(timedelta(minutes=1))
    for h in harnesses:
        await h.cycle(timedelta(0))
    sources = sorted(r["source"] for r in store.alerts())
    assert sources == ["dr", "ep"]
    assert len(slack.messages) == 2
    assert sum("source `dr`" in m.raw for m in slack.messages) == 1
    assert sum("source `ep`" in m.raw for m in slack.messages) == 1
    checkpoints = {s.source: s.checkpoint for s in store.summary().sources}
    assert set(checkpoints) == {"dr", "ep"}
