"""Rules → routing → outbox → Slack / e-mail, against the simulator, a loopback Slack and
aiosmtpd. Time is the simulator's frozen clock."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.alerts import Alert, AlertState, Notification, Severity, TaskFacts
from taskwarden.errors import ServerError
from taskwarden.matchers import parse_all
from taskwarden.poller import PollFailed
from taskwarden.routing import Route, Silence
from taskwarden.rules import BurstRule, FailedRule, StuckRule, Team
from taskwarden.simulator.faults import Fault
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.state import SqliteStateStore, open_state

from .alerting_harness import (
    Harness,
    SmtpServer,
    email_notifier,
    failed_with,
    receivers,
    slack_bot,
    slack_hook,
    tree,
)
from .helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.sources.digitalriver import DigitalRiverClient

TEAM = Team(
    "catalog",
    rules=(
        FailedRule(
            "deploys",
            "catalog",
            matchers=parse_all(['kind=~"DEPLOY_PRODUCT|RETIRE_PRODUCT"']),
            severity=Severity.CRITICAL,
        ),
        FailedRule("other-failures", "catalog"),
        StuckRule("stuck", "catalog", after=timedelta(hours=2)),
        BurstRule("burst", "catalog", threshold=50, window=timedelta(minutes=15)),
    ),
)
DEPLOY_ERRORS = [{"code": "price_missing", "description": "No price for USD"}]


@pytest.fixture
def harness(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, slack: SlackServer
) -> Harness:
    return Harness(
        sim=sim,
        source=DigitalRiverSource(dr_client),
        store=store,
        notifiers={"slack": slack_bot(slack), "ops": slack_hook(slack)},
        teams=(TEAM,),
    )


async def baseline(h: Harness) -> None:
    h.sim.add_task(status="FAILED", received=h.sim.now() - timedelta(hours=2))
    await h.cycle()


async def test_failed_deploy_alerts_once_with_details(harness: Harness, slack: SlackServer) -> None:
    sim = harness.sim
    await baseline(harness)
    assert slack.messages == []  # history recorded at the baseline does not alert
    deploy = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
    update = sim.add_task(status="PROCESSING", request_type="UPDATE_PRODUCT")
    await harness.cycle()
    sim.set_status(deploy.task_id, "FAILED", deployment_errors=DEPLOY_ERRORS)
    sim.set_status(update.task_id, "FAILED", errors=[{"code": "bad_sku", "description": "x"}])
    await harness.cycle()
    assert len(slack.messages) == 2  # grouped by kind: one message each
    by_text = {m.text: m for m in slack.messages}
    deploy_msg = next(m for t, m in by_text.items() if "DEPLOY_PRODUCT" in t)
    assert deploy_msg.text.startswith("[CRITICAL] FIRING: DEPLOY_PRODUCT failed")
    assert "price_missing" in deploy_msg.raw
    assert "No price for USD" in deploy_msg.raw
    assert deploy.task_id in deploy_msg.raw
    update_msg = next(m for t, m in by_text.items() if "UPDATE_PRODUCT" in t)
    assert update_msg.text.startswith("[WARNING]")
    for _ in range(3):  # the same failure is never reported again
        await harness.cycle()
    assert len(slack.messages) == 2


async def test_alert_still_goes_out_when_details_fail(harness: Harness, slack: SlackServer) -> None:
    sim = harness.sim
    await baseline(harness)
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
    await harness.cycle()
    sim.set_status(task.task_id, "FAILED")
    sim.inject(Fault("server_error", remaining=50, endpoint="dr.detail"))
    await harness.cycle()
    [message] = slack.messages
    assert "Error details unavailable" in message.raw
    assert task.task_id in message.raw


async def test_stuck_fires_repeats_and_resolves_in_thread(
    harness: Harness, slack: SlackServer
) -> None:
    sim = harness.sim
    await baseline(harness)
    task = sim.add_task(status="PROCESSING", request_type="PRODUCT_IMPORT")
    await harness.cycle()
    await harness.cycle(timedelta(hours=2))
    [first] = slack.messages
    assert "stuck in PROCESSING" in first.text
    assert first.thread_ts is None
    await harness.cycle(timedelta(hours=1))
    assert len(slack.messages) == 1  # no repeat before repeat_interval
    await harness.cycle(timedelta(hours=3, minutes=5))
    assert len(slack.messages) == 2
    assert slack.messages[1].text.startswith("[WARNING] REPEAT")
    assert slack.messages[1].thread_ts == first.ts
    sim.set_status(task.task_id, "COMPLETED")
    await harness.cycle(timedelta(minutes=2))
    resolved = slack.messages[-1]
    assert resolved.text.startswith("[RESOLVED]")
    assert "finished COMPLETED after 6h" in resolved.raw
    assert resolved.thread_ts == first.ts


async def test_a_trickle_of_failures_waits_for_group_interval_and_is_broadcast(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    """Failures of one group a minute apart: the first is told at once (group_wait 0), the
    next ones wait for the group's interval (here 5 min) and come as one reply in the first
    message's thread that is also shown in the channel, not as a message each."""
    harness.route = tree(group_interval=timedelta(minutes=5))
    await baseline(harness)
    tasks = [sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT") for _ in range(4)]
    await harness.cycle()
    for task in tasks:
        sim.set_status(task.task_id, "FAILED", errors=DEPLOY_ERRORS)
        await harness.cycle()
    [first] = slack.messages
    assert first.thread_ts is None
    assert tasks[0].task_id in first.raw
    await harness.cycle(timedelta(minutes=2))  # five minutes after the first message
    [_, follow_up] = slack.messages
    assert follow_up.thread_ts == first.ts
    assert follow_up.broadcast
    assert all(task.task_id in follow_up.raw for task in tasks[1:])


async def test_burst_is_one_incident_not_hundreds(harness: Harness, slack: SlackServer) -> None:
    sim = harness.sim
    await baseline(harness)
    tasks = [sim.add_task(status="PROCESSING", request_type="PRODUCT_IMPORT") for _ in range(120)]
    await harness.cycle()
    for task in tasks:
        sim.set_status(task.task_id, "FAILED")
    report = await harness.cycle()
    assert not isinstance(report, PollFailed)
    assert len(slack.messages) == 1
    [burst] = slack.messages
    assert "Failure burst: 120 failed tasks" in burst.text
    assert "PRODUCT_IMPORT" in burst.raw
    outcomes = {row["outcome"] for row in harness.store.alerts() if row["rule"] == "other-failures"}
    assert outcomes == {"inhibited"}  # recorded, not sent
    await harness.cycle(timedelta(minutes=20))
    assert slack.messages[-1].text.startswith("[RESOLVED]")
    assert slack.messages[-1].thread_ts == burst.ts


async def test_source_health_alerts_ops_and_resolves(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    await baseline(harness)
    sim.inject(Fault("server_error", remaining=10_000, status=503))
    for _ in range(3):
        assert failed_with(await harness.cycle(timedelta(minutes=5)), ServerError)
    assert slack.in_channel("alerts") == []
    assert failed_with(await harness.cycle(timedelta(minutes=5)), ServerError)  # 15 min failing
    [down] = slack.messages
    assert down.via == "webhook"  # the ops receiver
    assert "polling has failed for 15m" in down.text
    sim.faults.clear()
    await harness.cycle()
    assert slack.messages[-1].text.startswith("[RESOLVED]")
    assert "polling works again" in slack.messages[-1].raw


async def test_rejected_credentials_alert_at_once(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    await baseline(harness)
    sim.api_key = "rotated-by-someone"
    await harness.cycle()
    [alert] = slack.messages
    assert "rejects taskwarden's credentials" in alert.text


async def test_routing_continue_grouping_and_silences(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    harness.route = tree(
        group_wait=timedelta(seconds=30),
        routes=(
            Route(receiver="ops", matchers=parse_all(['team="ops"'])),
            Route(
                receiver="slack",
                matchers=parse_all(['severity="critical"']),
                continue_matching=True,
            ),
            Route(receiver="ops", matchers=parse_all(['kind="DEPLOY_PRODUCT"'])),
        ),
    )
    await baseline(harness)
    tasks = [sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT") for _ in range(3)]
    await harness.cycle()
    for task in tasks[:2]:
        sim.set_status(task.task_id, "FAILED")
    await harness.cycle(timedelta(seconds=10))
    assert slack.messages == []  # group_wait collects siblings
    sim.set_status(tasks[2].task_id, "FAILED")
    await harness.cycle(timedelta(seconds=30))
    bot = [m for m in slack.messages if m.via == "api"]
    hook = [m for m in slack.messages if m.via == "webhook"]
    assert len(bot) == 1  # critical → slack …
    assert len(hook) == 1  # … and continue → the DEPLOY_PRODUCT route to ops
    assert "3 alerts" in bot[0].text
    # A silence suppresses, but the record stays.
    harness.store.add_silence(
        Silence(
            "s1", parse_all(['kind="UPDATE_PRODUCT"']), sim.now(), sim.now() + timedelta(hours=1)
        )
    )
    quiet = sim.add_task(status="PROCESSING", request_type="UPDATE_PRODUCT")
    await harness.cycle()
    sim.set_status(quiet.task_id, "FAILED")
    before = len(slack.messages)
    await harness.cycle(timedelta(minutes=2))
    await harness.cycle(timedelta(seconds=30))  # past group_wait: the group is flushed
    assert len(slack.messages) == before
    assert {r["outcome"] for r in harness.store.alerts() if r["rule"] == "other-failures"} == {
        "silenced"
    }


async def test_slack_429_storm_delays_but_loses_nothing(
    harness: Harness, slack: SlackServer
) -> None:
    sim = harness.sim
    await baseline(harness)
    kinds = ["DEPLOY_PRODUCT", "UPDATE_PRODUCT", "CREATE_PRODUCT"]
    tasks = [sim.add_task(status="PROCESSING", request_type=k) for k in kinds]
    await harness.cycle()
    slack.inject(Fault("rate_limit", remaining=6, retry_after=2, endpoint="slack.postMessage"))
    for task in tasks:
        sim.set_status(task.task_id, "FAILED")
    await harness.poll()
    report = await harness.sender.deliver_due()
    assert report.retried["slack"] == 1
    assert not report.sent  # order kept: the rest wait for the first
    pending = harness.store.outbox()
    assert [r["last_error"] for r in pending if r["attempts"]] == ["Slack rate limit (ratelimited)"]
    retry_at = next(r for r in pending if r["attempts"])["next_attempt_ms"]
    assert retry_at - pending[0]["created_ms"] == 2000  # Retry-After honoured
    await harness.deliver_until_empty(step=timedelta(seconds=2))
    assert sorted(k for m in slack.messages for k in kinds if k in m.text) == sorted(kinds)
    assert len(slack.messages) == 3


async def test_permanent_failure_goes_to_the_fallback(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    harness.notifiers["slack"] = slack_bot(slack, channel="deleted-channel")
    harness.sender.replace_receivers(receivers(harness.notifiers), harness.delivery)
    await baseline(harness)
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
    await harness.cycle()
    sim.set_status(task.task_id, "FAILED")
    await harness.cycle()
    await harness.sender.deliver_due()
    assert [r["state"] for r in harness.store.outbox()][:1] == ["dead"]
    [fallback] = slack.messages
    assert fallback.via == "webhook"
    assert "A notification to receiver slack was given up" in fallback.text
    assert "channel_not_found" in fallback.raw
    # The notice says what was lost: the alert's title (its product) and its task.
    [erid] = [p["externalReferenceId"] for p in task.products]
    assert (
        f"lost (firing, rule deploys): DEPLOY_PRODUCT failed: {erid} [tasks {task.task_id}]"
        in fallback.raw
    )
    assert harness.sender.totals.dead["slack"] == 1


async def test_untrusted_text_is_inert(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    await baseline(harness)
    evil = [
        {
            "productId": "<!channel>",
            "externalReferenceId": "<!channel> <https://evil.example|click> https://evil.example",
            "productType": "INDIVIDUAL",
        }
    ]
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT", products=evil)
    await harness.cycle()
    sim.set_status(
        task.task_id, "FAILED", errors=[{"code": "<@U123>", "description": "<!here> *bold*"}]
    )
    await harness.cycle()
    [message] = slack.messages
    assert "<!channel>" not in message.raw
    assert "<!here>" not in message.raw
    assert "<https://evil" not in message.raw
    assert "<@U123>" not in message.raw
    assert "&lt;!channel&gt;" in message.raw
    sections = [b for b in message.blocks if b["type"] == "section"]
    assert all(b["text"].get("verbatim") for b in sections)  # no auto-linking


def _well_formed(mrkdwn: str) -> None:
    """Every entity whole and every code span closed, line by line."""
    assert re.search(r"&(?!amp;|lt;|gt;)", mrkdwn) is None, mrkdwn
    for line in mrkdwn.splitlines():
        assert line.count("`") % 2 == 0, line


async def test_long_vendor_text_fits_slack_limits(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    """Block Kit refuses a whole message for one field over 2,000 characters; long ERIDs and
    error texts are cut (entities and code spans intact) and the message is delivered."""
    await baseline(harness)
    products = [
        {"productId": f"p{i}", "externalReferenceId": f"{i}" + "R&D<x>`" * 64, "productType": "X"}
        for i in range(5)
    ]
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT", products=products)
    await harness.cycle()
    errors = [{"code": f"e{i}" * 100, "description": "a&b " * 300} for i in range(7)]
    sim.set_status(task.task_id, "FAILED", errors=errors)
    await harness.cycle()
    assert slack.refused == []
    [message] = slack.messages
    [task_block] = [b for b in message.blocks if b["type"] == "section" and "fields" in b]
    for text in [task_block["text"]["text"], *(f["text"] for f in task_block["fields"])]:
        _well_formed(text)
    assert "2 more problems" in task_block["text"]["text"]
    products_field = next(f["text"] for f in task_block["fields"] if "Products" in f["text"])
    assert len(products_field) <= 2000
    assert products_field.endswith("…`")


async def test_a_group_larger_than_fifty_blocks_says_what_it_left_out(
    slack: SlackServer, sim: Simulator
) -> None:
    """Ten firing and ten resolved alerts of three tasks each are 110 blocks; Slack takes 50."""

    def alert(number: int, state: AlertState) -> Alert:
        tasks = tuple(
            TaskFacts(f"t{number}-{i}", "DEPLOY_PRODUCT", "FAILED", sim.now()) for i in range(3)
        )
        labels = (("team", "catalog"),)
        return Alert(
            f"k{number}",
            "burst",
            "dr",
            Severity.WARNING,
            labels,
            f"burst {number}",
            state=state,
            tasks=tasks,
        )

    firing = tuple(alert(i, AlertState.FIRING) for i in range(10))
    resolved = tuple(alert(i, AlertState.RESOLVED) for i in range(10, 20))
    notification = Notification(
        "slack", "g", (), firing, resolved, firing_total=10, resolved_total=10
    )
    await slack_bot(slack).send(notification, thread=None)
    assert slack.refused == []
    [message] = slack.messages
    assert len(message.blocks) == 50
    shown = sum(1 for b in message.blocks if b["type"] == "divider")
    assert 0 < shown < 20
    summary = message.blocks[-1]["elements"][0]["text"]
    assert f"… and {20 - shown} more alerts than one Slack message can show" in summary
    partial = [b for b in message.blocks if "more tasks not shown" in json.dumps(b)]
    assert len(partial) <= 1


async def test_email_delivery_outage_and_header_safety(
    tmp_path: Path, sim: Simulator, dr_client: DigitalRiverClient, slack: SlackServer
) -> None:
    port = free_port()
    smtp = SmtpServer(port)
    smtp.start()
    store = open_state(tmp_path / "mail.db", now=sim.now())
    h = Harness(
        sim=sim,
        source=DigitalRiverSource(dr_client),
        store=store,
        notifiers={"mail": email_notifier(port), "ops": slack_hook(slack)},
        teams=(TEAM,),
        route=tree(receiver="mail"),
    )
    try:
        await baseline(h)
        evil_erid = "x\r\nBcc: victim@example.com"
        task = sim.add_task(
            status="PROCESSING",
            request_type="DEPLOY_PRODUCT\r\nX-Injected: yes",
            products=[{"productId": "1", "externalReferenceId": evil_erid}],
        )
        await h.cycle()
        smtp.stop()  # outage: delayed, not lost
        sim.set_status(task.task_id, "FAILED")
        await h.cycle()
        assert smtp.mailbox.messages == []
        assert h.store.outbox_depth()[0] == 1
        smtp.start()
        await h.deliver_until_empty()
        [mail] = smtp.mailbox.messages
        assert mail["X-Injected"] is None
        assert mail["Bcc"] is None
        assert "\n" not in str(mail["Subject"])
        assert str(mail["Subject"]).startswith("[taskwarden] [WARNING] FIRING:")
        assert mail.get_content_type() == "multipart/alternative"
        html = mail.get_body(("html",))
        assert html is not None
        assert "victim@example.com" in str(html.get_content())  # shown, as text only
        # SMTP 5xx is permanent: given up at once and reported through the fallback.
        smtp.mailbox.answer = "554 5.7.1 rejected"
        other = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
        await h.cycle()
        sim.set_status(other.task_id, "FAILED")
        await h.cycle()
        assert h.store.outbox()[-2]["state"] == "dead"
        assert "SMTP 554" in (h.store.outbox()[-2]["last_error"] or "")
        await h.sender.deliver_due()  # the fallback's message, enqueued by the give-up
        assert "A notification to receiver mail was given up" in slack.messages[-1].text
        assert f"[tasks {other.task_id}]" in slack.messages[-1].raw
    finally:
        smtp.stop()
        store.close()


async def test_storm_of_5000_failures_is_bounded(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    harness.teams = (Team("catalog", rules=(FailedRule("failures", "catalog"),)),)
    await baseline(harness)
    # Received within the scan's overlap: the listing sees them, so every detail GET
    # below is enrichment.
    tasks = sim.generate(
        5000, begin=sim.now() - timedelta(minutes=3), end=sim.now(), open_share=1.0
    )
    await harness.cycle()
    for task in tasks:
        sim.set_status(task.task_id, "FAILED")
    details_before = sim.requests["dr.detail"]
    report = await harness.cycle()
    assert not isinstance(report, PollFailed)
    kinds = {t.request_type for t in tasks}
    assert len(slack.messages) == len(kinds)  # one summary per (team, rule, kind) group
    assert sim.requests["dr.detail"] - details_before == 20  # enrichment is capped
    unfetched = [r for r in harness.store.alerts() if "not fetched" in r["payload"]]
    assert len(unfetched) == 4980
    total = 0
    for message in slack.messages:
        blocks = json.dumps(message.blocks)
        assert len(message.blocks) <= 50
        assert "more firing alerts in this group" in blocks
        total += int(message.text.split("FIRING: ")[1].split(" alerts")[0])
    assert total == 5000


async def test_concurrent_delivery_rounds_never_send_twice(
    harness: Harness, slack: SlackServer, sim: Simulator
) -> None:
    """A shutdown drain racing the scheduled delivery job must not duplicate a message."""
    await baseline(harness)
    task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
    await harness.cycle()
    sim.set_status(task.task_id, "FAILED")
    await harness.poll()
    slack.inject(Fault("slow", delay=0.3, endpoint="slack.postMessage"))
    await asyncio.gather(harness.sender.deliver_due(), harness.sender.deliver_due())
    assert len(slack.messages) == 1
    assert harness.store.outbox_depth() == (0, None)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_email_over_tls_with_login(tmp_path: Path, mode: str) -> None:
    import trustme
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from taskwarden.alerts import Notification
    from taskwarden.errors import PermanentDeliveryError
    from taskwarden.notify.email import EmailNotifier

    from .alerting_harness import Mailbox

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def authenticate(
        _server: object, _session: object, _envelope: object, _mechanism: str, data: object
    ) -> AuthResult:
        ok = (
            getattr(data, "login", b"") == b"taskwarden"
            and getattr(data, "password", b"") == b"s3cret"
        )
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535

    mailbox = Mailbox()
    port = free_port()
    tls_kwargs = (
        {"tls_context": server_context, "require_starttls": True, "auth_require_tls": True}
        if mode == "starttls"
        # Implicit TLS wraps the socket before aiosmtpd sees it; it cannot tell, so the
        # "TLS before AUTH" check is off (the connection is TLS all the same).
        else {"ssl_context": server_context, "auth_require_tls": False}
    )
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, authenticator=authenticate, **tls_kwargs,
    )  # fmt: skip
    controller.start()
    try:

        def notifier(password: str) -> EmailNotifier:
            return EmailNotifier(
                "mail", host="127.0.0.1", port=port, sender="tw@example.com",
                recipients=["oncall@example.com"], tls=mode,
                username="taskwarden", password=password, timeout=5, ca_file=str(ca_file),
            )  # fmt: skip

        note = Notification(receiver="mail", group_key="t", group_labels=(), firing=(), test=True)
        await notifier("s3cret").send(note, thread=None)
        assert len(mailbox.messages) == 1
        assert str(mailbox.messages[0]["Subject"]).startswith("[taskwarden] [TEST]")
        with pytest.raises(PermanentDeliveryError, match="SMTP 535"):
            await notifier("wrong").send(note, thread=None)
    finally:
        controller.stop()
