"""Rule annotations: Jinja2 templates in the sandbox, compiled and tried at load (errors
with file, rule and line), rendered when an alert fires, shown by every receiver as text
that stays inert."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.alerts import Notification
from taskwarden.diff import StatusChanged
from taskwarden.errors import ConfigError
from taskwarden.model import Phase, Product, Task
from taskwarden.notify.email import html_body
from taskwarden.notify.render import plain_text
from taskwarden.notify.slack import blocks
from taskwarden.notify.webhook import payload
from taskwarden.rules import RuleInput, evaluate
from taskwarden.teams import load_team_file
from taskwarden.templates import SAMPLE, compile_annotations, environment

from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path

TEAM = """\
team: catalog
labels: {owner: anna}
rules:
  - name: failed-deploys
    type: failed
    severity: critical
    annotations:
      summary: "Deploy of {{ task.erid or task.id }} failed after {{ task.took }}"
      description: "{{ task.errors | join('; ') }} (owner {{ labels.owner }})"
      runbook_url: "https://runbooks.example/{{ rule }}"
"""


def team_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(text)
    return path


def deploy(erid: str) -> StatusChanged:
    task = Task(
        source="dr", task_id="t1", status="FAILED", phase=Phase.FAILED, kind="DEPLOY_PRODUCT",
        received_time=T0 - timedelta(minutes=12), finished_time=T0,
        products=(Product("1001", erid, "INDIVIDUAL"),),
    )  # fmt: skip
    return StatusChanged(task, old="PROCESSING", new="FAILED", old_phase=Phase.OPEN)


def test_annotations_render_when_the_alert_fires_and_every_receiver_shows_them(
    tmp_path: Path,
) -> None:
    team = load_team_file(team_file(tmp_path, TEAM))
    [alert] = evaluate([team], RuleInput("dr", [deploy("SKU-1")], T0)).fired
    assert dict(alert.annotations) == {
        "summary": "Deploy of SKU-1 failed after 12m",
        "description": "(owner anna)",  # no vendor errors fetched in this test: stripped
        "runbook_url": "https://runbooks.example/failed-deploys",
    }
    n = Notification("hook", "g", (), (alert,), firing_total=1)
    assert "Deploy of SKU-1 failed after 12m" in plain_text(n)
    assert "Runbook: https://runbooks.example/failed-deploys" in plain_text(n)
    link = '<a href="https://runbooks.example/failed-deploys">Runbook</a>'
    assert link in html_body(n)
    assert "<https://runbooks.example/failed-deploys|Runbook>" in json.dumps(blocks(n))
    sent = payload(n, receiver="hook")["alerts"][0]["annotations"]
    assert sent["runbook_url"] == "https://runbooks.example/failed-deploys"
    assert sent["summary"] == "Deploy of SKU-1 failed after 12m"


def test_vendor_text_through_a_template_stays_inert(tmp_path: Path) -> None:
    team = load_team_file(team_file(tmp_path, TEAM))
    [alert] = evaluate([team], RuleInput("dr", [deploy("<!channel> *x*")], T0)).fired
    assert dict(alert.annotations)["summary"] == "Deploy of <!channel> *x* failed after 12m"
    slack = json.dumps(blocks(Notification("s", "g", (), (alert,), firing_total=1)))
    assert "<!channel>" not in slack
    assert "&lt;!channel&gt;" in slack


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('"{{ task.erid "', "unexpected end of template"),
        (
            '"{{ tsk.erid }}"',
            "'tsk' is undefined (names: count, labels, rule, severity, source, task, tasks, team",
        ),
        ('"{{ task.sku }}"', "has no attribute 'sku'"),
        ("\"{{ ''.__class__.__mro__ }}\"", "SecurityError"),
    ],
)
def test_a_broken_template_is_an_error_at_load_with_file_rule_and_line(
    tmp_path: Path, template: str, message: str
) -> None:
    text = TEAM.replace('"https://runbooks.example/{{ rule }}"', template)
    path = team_file(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_team_file(path)
    error = str(caught.value)
    assert f"{path}: 1 problem(s):" in error
    assert "rules[0] 'failed-deploys' annotations (line 10): annotation 'runbook_url'" in error
    assert message in error


def test_a_template_that_fails_only_on_real_data_marks_that_annotation_and_the_alert_goes_out() -> (
    None
):
    annotations = compile_annotations(
        {"summary": "fine", "ratio": "{% if count > 1 %}{{ 1 / 0 }}{% endif %}"}, environment()
    )
    rendered = dict(annotations.render({**SAMPLE, "count": 3}))
    assert rendered["summary"] == "fine"
    assert rendered["ratio"].startswith("(template error: ZeroDivisionError")
