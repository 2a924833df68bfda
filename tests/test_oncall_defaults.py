"""What an on-call engineer reads at 3 a.m., by default (issue 15): the product in the title,
labels said once per group, relative times, the runbook and console links (clickable in
e-mail too), and a ready ``taskwarden silence add`` line that really silences the group."""

from __future__ import annotations

import json
import re
import shlex
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from taskwarden.alerts import Alert, Notification, Severity, TaskFacts
from taskwarden.cli import cli
from taskwarden.config import load_settings
from taskwarden.diff import StatusChanged
from taskwarden.errors import ConfigError
from taskwarden.links import ConsoleLink
from taskwarden.matchers import single_valued
from taskwarden.model import Phase, Product, Task
from taskwarden.notify.email import html_body
from taskwarden.notify.render import plain_text, silence_command
from taskwarden.notify.slack import blocks
from taskwarden.outbox import Receiver
from taskwarden.routing import Route
from taskwarden.rules import FailedRule, RuleInput, Team, evaluate
from taskwarden.sources.digitalriver import DigitalRiverSource
from taskwarden.state import open_state
from taskwarden.timeutil import format_api_time

from .alerting_harness import Harness, SmtpServer, email_notifier, slack_bot, tree
from .conftest import T0
from .helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer
    from taskwarden.sources.digitalriver import DigitalRiverClient
    from taskwarden.state import SqliteStateStore

TEAM = Team("catalog", rules=(FailedRule("deploys", "catalog", severity=Severity.CRITICAL),))


def failed(*products: Product, task_id: str = "4f1c7d2e-0000-4000-8000-000000000001") -> Task:
    return Task(
        source="dr", task_id=task_id, status="FAILED", phase=Phase.FAILED, kind="DEPLOY_PRODUCT",
        received_time=T0 - timedelta(minutes=12), finished_time=T0, products=products,
    )  # fmt: skip


def title_of(task: Task) -> str:
    event = StatusChanged(task, old="PROCESSING", new="FAILED", old_phase=Phase.RUNNING)
    [alert] = evaluate([TEAM], RuleInput("dr", [event], T0)).fired
    return alert.title


def test_a_title_names_the_product_not_the_task() -> None:
    assert title_of(failed(Product("1001", "SKU-1"))) == "DEPLOY_PRODUCT failed: SKU-1"
    assert title_of(failed(Product("1001"))) == "DEPLOY_PRODUCT failed: 1001"
    two = failed(Product("1001", "SKU-1"), Product("1002", "SKU-2"))
    assert title_of(two) == "DEPLOY_PRODUCT failed: SKU-1 and 1 more"
    assert title_of(failed()) == "DEPLOY_PRODUCT failed: task 4f1c7d2e-0000-4000-8000-000000000001"
    # Vendor text reaches headers through the title: one line, bounded.
    long = title_of(failed(Product("1", "line\nbreak " + "x" * 200)))
    assert "\n" not in long
    assert len(long) <= len("DEPLOY_PRODUCT failed: ") + 80


def alert(kind: str, *, owner: str = "anna", runbook: str | None = None) -> Alert:
    facts = TaskFacts(
        task_id=f"task-{kind}", kind=kind, status="FAILED",
        received_time=T0 - timedelta(minutes=12), finished_time=T0,
        products=(Product("1001", "SKU-1"),),
        uri=f"https://api.example/v1/products/tasks/task-{kind}",
    )  # fmt: skip
    return Alert(
        key=f"k-{kind}", rule="deploys", source="dr", severity=Severity.CRITICAL,
        labels=(("kind", kind), ("owner", owner), ("rule", "deploys"), ("team", "catalog")),
        title=f"{kind} failed: SKU-1", starts_at=T0, tasks=(facts,),
        annotations=(("runbook_url", runbook),) if runbook else (),
    )  # fmt: skip


def group(
    *alerts: Alert, labels: tuple[tuple[str, str], ...] = (("team", "catalog"),)
) -> Notification:
    return Notification(
        "slack", "g", labels, alerts, firing_total=len(alerts), created_at=T0 + timedelta(minutes=4)
    )


def test_times_are_told_relative_to_when_the_message_was_composed() -> None:
    text = plain_text(group(alert("DEPLOY_PRODUCT")))
    assert f"Finished: {format_api_time(T0)} (4m ago, after 12m)" in text
    assert f"Received: {format_api_time(T0 - timedelta(minutes=12))} (16m ago)" in text


def test_labels_the_group_shares_are_said_once_and_the_rest_per_alert() -> None:
    n = group(alert("DEPLOY_PRODUCT"), alert("RETIRE_PRODUCT"))
    for rendered in (plain_text(n), html_body(n), json.dumps(blocks(n))):
        assert rendered.count("owner=anna") == 1
        assert rendered.count("kind=DEPLOY_PRODUCT") == 1
        assert rendered.count("kind=RETIRE_PRODUCT") == 1
    different = group(alert("DEPLOY_PRODUCT"), alert("RETIRE_PRODUCT", owner="ben"))
    assert plain_text(different).count("owner=") == 2


def test_links_are_clickable_in_email_and_slack_but_only_for_web_urls() -> None:
    good = alert("DEPLOY_PRODUCT", runbook="https://runbooks.example/deploys?team=a&b=1")
    html = html_body(group(good))
    assert '<a href="https://runbooks.example/deploys?team=a&amp;b=1">Runbook</a>' in html
    assert '<a href="https://api.example/v1/products/tasks/task-DEPLOY_PRODUCT">API</a>' in html
    slack = json.dumps(blocks(group(good)))
    assert "<https://api.example/v1/products/tasks/task-DEPLOY_PRODUCT|API>" in slack
    evil = alert("DEPLOY_PRODUCT", runbook='javascript:alert(1)//"><script>')
    html = html_body(group(evil))
    assert "javascript:" not in html.split("<code>")[0]  # shown as text, never an href
    assert "<script>" not in html
    assert 'href="javascript' not in html
    assert "<javascript:" not in json.dumps(blocks(group(evil)))


async def test_the_silence_line_pastes_into_a_shell_and_silences_the_group(tmp_path: Path) -> None:
    hostile = "DEPLOY $(touch pwned) \"q\" 'x' \\ `id`"
    n = group(alert("DEPLOY_PRODUCT"), labels=(("kind", hostile), ("team", "catalog")))
    command = silence_command(n)
    assert command is not None
    assert command in plain_text(n)
    args = shlex.split(command)
    assert args[:3] == ["taskwarden", "silence", "add"]
    config = tmp_path / "taskwarden.yaml"
    config.write_text(f"state:\n  path: {tmp_path / 'state.db'}\n")
    added = CliRunner().invoke(cli, [*args[1:], "-c", str(config)])
    assert added.exit_code == 0, added.output
    assert not (tmp_path / "pwned").exists()
    store = open_state(tmp_path / "state.db", now=T0)
    try:
        [silence] = store.silences()
    finally:
        store.close()
    labels = single_valued((("kind", hostile), ("team", "catalog"), ("rule", "deploys")))
    assert all(m.matches(labels) for m in silence.matchers)
    assert silence.ends_at - silence.starts_at == timedelta(hours=2)
    # A group label its alerts lack is left out: kind="" would match none of them.
    burst = group(alert("DEPLOY_PRODUCT"), labels=(("kind", ""), ("team", "catalog")))
    assert silence_command(burst) == (
        "taskwarden silence add --for 2h --comment 'acknowledged' 'team=\"catalog\"'"
    )
    # Nothing to silence in a resolution or a test message.
    assert silence_command(Notification("s", "g", (("team", "c"),), (), test=True)) is None


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        ("https://console.example/{task_id.__class__}", "has the field"),
        ("https://console.example/{0}", "has the field"),
        ("https://console.example/{task_id!r}", "has the field"),
        ("https://console.example/{task_id:>40}", "has the field"),
        ("https://console.example/{nope}", "has the field"),
        ("https://console.example/{task_id", "not a valid pattern"),
        ("javascript:alert('{task_id}')", "http(s) URL"),
        ("/tasks/{task_id}", "http(s) URL"),
    ],
)
def test_a_console_pattern_is_checked_at_load(pattern: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        ConsoleLink.compile(pattern)


def test_a_console_link_quotes_what_it_is_given() -> None:
    link = ConsoleLink.compile("https://console.example/{source}/products/{erid}?task={task_id}")
    products = (Product("1001", "a/b c?&"),)
    assert link.for_task("t 1", "dr", products) == (
        "https://console.example/dr/products/a%2Fb%20c%3F%26?task=t%201"
    )
    assert link.for_task("t1", "dr", (Product("1001"),)) is None  # no ERID: the API URL only


def test_a_bad_console_pattern_in_the_config_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "sources:\n  dr:\n    base_url: http://127.0.0.1:9\n"
        "    console_url: https://console.example/{task}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    assert "sources.dr.console_url" in str(caught.value)
    assert "line 4" in str(caught.value)
    assert "task_id, source, product_id, erid" in str(caught.value)


async def test_alerts_link_the_console_page_in_slack_and_email(
    sim: Simulator, dr_client: DigitalRiverClient, store: SqliteStateStore, slack: SlackServer
) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    h = Harness(
        sim=sim, source=DigitalRiverSource(dr_client), store=store,
        notifiers={"slack": slack_bot(slack), "mail": Receiver(email_notifier(smtp.port), attempt_timeout=10)},
        teams=(TEAM,),
        route=tree(routes=(Route(receiver="mail", continue_matching=True), Route(receiver="slack"))),
        console_links={"dr": ConsoleLink.compile("https://console.example/tasks/{task_id}")},
    )  # fmt: skip
    try:
        await h.cycle()
        task = sim.add_task(status="PROCESSING", request_type="DEPLOY_PRODUCT")
        await h.cycle()
        sim.set_status(task.task_id, "FAILED")
        await h.cycle()
        await h.deliver_until_empty()
        [message] = slack.messages
        console = f"https://console.example/tasks/{task.task_id}"
        assert f"<{console}|Open in the console>" in message.raw
        assert "Silence this group: `taskwarden silence add" in message.raw
        [mail] = smtp.mailbox.messages
        html = mail.get_body(("html",))
        assert html is not None
        assert f'<a href="{console}">Open in the console</a>' in str(html.get_content())
        text = mail.get_body(("plain",))
        assert text is not None
        assert f"Open in the console: {console}" in str(text.get_content())
    finally:
        smtp.stop()


def test_the_console_link_is_kept_with_the_alert() -> None:
    from dataclasses import replace

    from taskwarden.alerts import decode_alert, encode_alert

    shown = alert("DEPLOY_PRODUCT")
    linked = replace(shown, tasks=(replace(shown.tasks[0], console_uri="https://c.example/t"),))
    assert decode_alert(encode_alert(linked)) == linked
    assert decode_alert(encode_alert(shown)).tasks[0].console_uri is None
