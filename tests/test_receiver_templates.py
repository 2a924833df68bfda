"""Receiver ``title`` / ``text`` templates (issue 15): the defaults are the built-in
rendering, each medium escapes every value its own way while the template's own markup
stays, errors are found at load with the key and line, and a template that fails on a real
message falls back to the built-in rendering and says so."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.alerts import Alert, Notification, Severity, TaskFacts
from taskwarden.config import load_settings
from taskwarden.errors import ConfigError
from taskwarden.model import Product
from taskwarden.notify.email import EmailNotifier, bodies, html_body, plain_text, subject
from taskwarden.notify.slack import blocks, fallback_text, message
from taskwarden.notify.teams import card
from taskwarden.notify.teams import templates as teams_templates
from taskwarden.wiring import build_notifier

from .alerting_harness import SmtpServer
from .conftest import T0
from .helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator.slack import SlackServer

EVIL = "<!channel> <script>x</script> [click](https://evil.example) *b*"


def alert(erid: str = EVIL, n: int = 1) -> Alert:
    facts = TaskFacts(
        task_id=f"t{n}", kind="DEPLOY_PRODUCT", status="FAILED",
        received_time=T0 - timedelta(minutes=12), finished_time=T0,
        products=(Product("1001", erid),),
    )  # fmt: skip
    return Alert(
        key=f"k{n}", rule="deploys", source="dr", severity=Severity.CRITICAL,
        labels=(("rule", "deploys"), ("team", "catalog")),
        title=f"DEPLOY_PRODUCT failed: {erid}", starts_at=T0, tasks=(facts,),
    )  # fmt: skip


def group(*alerts: Alert) -> Notification:
    return Notification(
        "r", "g", (("team", "catalog"),), alerts or (alert(),),
        firing_total=len(alerts or (1,)), created_at=T0 + timedelta(minutes=4),
    )  # fmt: skip


def test_without_templates_each_receiver_shows_its_built_in_rendering() -> None:
    n = group()
    assert message(n) == (fallback_text(n), blocks(n))
    assert bodies(n) == (subject(n), plain_text(n), html_body(n))
    assert card(n, teams_templates(None, None)) == card(n)


def receiver_config(tmp_path: Path, receiver: str) -> Path:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"state:\n  path: {tmp_path / 'state.db'}\nroute: {{receiver: r}}\nreceivers:\n{receiver}"
    )
    return config


SLACK = """\
  r:
    slack:
      channel: alerts
      base_url: {url}
      title: "{{{{ firing_total }}}} failed: {{{{ alerts[0].task.erid }}}}"
      text: |
        *Team {{{{ group_labels.team }}}}* — <https://runbooks.example/deploys|runbook>
        {{% for a in alerts %}}• {{{{ a.task.erid }}}} ({{{{ a.task.took }}}}){{% endfor %}}
        {{{{ silence }}}}
"""


async def test_a_slack_template_keeps_its_markup_and_escapes_every_value(
    tmp_path: Path, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__R__SLACK__TOKEN", slack.token)
    settings = load_settings(receiver_config(tmp_path, SLACK.format(url=slack.api_url)))
    notifier = build_notifier("r", settings.receivers["r"])
    await notifier.send(group(), thread=None)
    [sent] = slack.messages
    assert "<!channel>" not in sent.raw
    assert "&lt;!channel&gt;" in sent.raw
    header = sent.blocks[0]["text"]["text"]
    assert header.startswith("1 failed: \u2039!channel\u203a")  # plain text: look-alikes
    [section] = [b for b in sent.blocks if b["type"] == "section"]
    text = section["text"]["text"]
    assert text.startswith("*Team catalog* — <https://runbooks.example/deploys|runbook>")
    assert "• &lt;!channel&gt; &lt;script&gt;" in text
    assert "(12m)" in text
    assert "taskwarden silence add" in text
    assert section["text"]["verbatim"] is True


async def test_an_email_template_is_html_escaped_in_html_and_plain_in_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    receiver = f"""\
  r:
    email:
      to: oncall@example.com
      from: taskwarden@example.com
      smtp: {{host: 127.0.0.1, port: {smtp.port}, tls: none}}
      title: "[{{{{ severity }}}}] {{{{ alerts[0].task.erid }}}}"
      text: "<b>Owner:</b> {{{{ group_labels.team }}}}\\nProduct: {{{{ alerts[0].task.erid }}}}"
"""
    try:
        settings = load_settings(receiver_config(tmp_path, receiver))
        notifier = build_notifier("r", settings.receivers["r"])
        assert isinstance(notifier, EmailNotifier)
        await notifier.send(group(alert("SKU\r\nBcc: victim@example.com <b>")), thread=None)
        [mail] = smtp.mailbox.messages
    finally:
        smtp.stop()
    assert mail["Subject"] == "[critical] SKU Bcc: victim@example.com <b>"
    assert mail["Bcc"] is None
    html = str(mail.get_body(("html",)).get_content())  # type: ignore[union-attr]
    assert "<b>Owner:</b> catalog" in html
    assert "Bcc: victim@example.com &lt;b&gt;" in html
    text = str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert "Owner:</b> catalog" in text  # the plain part: nothing escaped
    assert "victim@example.com <b>" in text


def test_a_teams_template_escapes_markdown_in_values_only() -> None:
    templates = teams_templates("**{{ alerts[0].task.erid }}**", "_{{ headline }}_")
    body = card(group(), templates)["attachments"][0]["content"]["body"]
    title, text = body[0]["text"], body[1]["text"]
    assert title.startswith("**\\<\\!channel\\>")
    assert "\\[click\\]\\(https://evil\\.example\\)" in title
    assert title.endswith("**")
    assert text.startswith("_")
    assert text.endswith("_")
    assert "[click](" not in json.dumps(body)


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("{{ alerts | }}", "line 1 of the template"),
        ("ok\n{% for a in alerts %}{{ a.nope }}", "line 2 of the template"),
        ("{{ nope }}", "'nope' is undefined (names: alerts, common_labels,"),
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ (1).__add__ }}", "__add__"),
    ],
)
def test_a_bad_template_is_a_configuration_error_naming_key_and_line(
    tmp_path: Path, template: str, complaint: str
) -> None:
    receiver = f"  r:\n    teams:\n      url: https://teams.example/wf\n      text: {json.dumps(template)}\n"
    with pytest.raises(ConfigError) as caught:
        load_settings(receiver_config(tmp_path, receiver))
    said = str(caught.value)
    assert "receivers.r.teams.text" in said
    assert "line 8" in said  # of the configuration file
    assert complaint in said


def test_a_template_that_fails_on_a_real_message_falls_back_and_says_so() -> None:
    from taskwarden.notify.slack import templates as slack_templates

    # The sample has one alert, so this loads; a message with two alerts breaks it.
    templates = slack_templates(None, "{% if firing_total > 1 %}{{ alerts[5].title }}{% endif %}")
    two = group(alert("SKU-1", 1), alert("SKU-2", 2))
    text, sent = message(two, templates)
    assert sent[1]["type"] == "context"
    assert "text template failed on this message" in sent[1]["elements"][0]["text"]
    assert sent[2:] == blocks(two)[1:]  # the built-in rendering, whole
    assert text == fallback_text(two)
