"""Matchers: Alertmanager's grammar, RE2's linear time, and labels that exist (issue 11
item 9, issue 12 item 6)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from taskwarden.cli import cli
from taskwarden.config import load_settings
from taskwarden.errors import ConfigError
from taskwarden.matchers import Matcher, MatcherError, parse_matchers
from taskwarden.wiring import build_alerting

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('team="merch",kind="UPDATE_PRODUCT"', ['team="merch"', 'kind="UPDATE_PRODUCT"']),
        ('{team="merch", kind=~"DEPLOY_.*"}', ['team="merch"', 'kind=~"DEPLOY_.*"']),
        ("{team=merch,}", ['team="merch"']),
        ('  team != "a \\"b\\" \\\\ c"  ', ['team!="a \\"b\\" \\\\ c"']),
        ('erid!~"x|y"', ['erid!~"x|y"']),
        ('team="{,}=~!"', ['team="{,}=~!"']),
    ],
)
def test_alertmanager_grammar(text: str, expected: list[str]) -> None:
    assert [str(m) for m in parse_matchers(text)] == expected


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('team="merch', "column 6: the quoted value is never closed"),
        ('team=="x"', "column 6: unexpected '=' after the operator ="),
        ('team="a" kind="b"', "column 10: unexpected 'k': separate matchers with commas"),
        ('{team="a"', "the brace is never closed"),
        ('team="a"}', "} without {"),
        ("team='a'", "single quotes"),
        ("team", "expected an operator"),
        ('9team="a"', "'9team' is not a label name"),
        ("", "no matcher"),
        ('team="a\\q"', "unknown escape"),
    ],
)
def test_everything_else_is_refused_with_its_position(text: str, said: str) -> None:
    with pytest.raises(MatcherError, match="matcher") as caught:
        parse_matchers(text)
    assert said in str(caught.value)


@pytest.mark.parametrize("pattern", ["(a)\\\\1", "(?=x)y", "(?<!x)y"])
def test_what_re2_cannot_run_is_refused(pattern: str) -> None:
    with pytest.raises(MatcherError, match="not valid RE2") as caught:
        parse_matchers(f'erid=~"{pattern}"')
    assert "^(?:" not in str(caught.value)  # no internal anchors in what people read


async def test_a_backtracking_pattern_matches_in_linear_time() -> None:
    """``(a+)+$`` on a crafted ERID froze the event loop for 16 s with Python's re (and
    for hours at 40 characters); RE2 answers at once. A bounded wait, not a timing."""
    matcher = Matcher.parse('erid=~"(a+)+$"')
    erid = "a" * 40 + "!"
    loop = asyncio.get_running_loop()
    result = await asyncio.wait_for(
        loop.run_in_executor(None, matcher.matches, {"erid": (erid,)}), timeout=5
    )
    assert result is False
    assert matcher.matches({"erid": ("aaaa",)})


def write(tmp_path: Path, text: str, team: str | None = None) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    (tmp_path / "teams" / "catalog.yaml").write_text(
        team or "team: catalog\nlabels: {owner: cat}\nrules:\n  - {name: f, type: failed}\n"
    )
    config = tmp_path / "taskwarden.yaml"
    config.write_text(text)
    return config


BASE = """\
sources:
  dr: {labels: {env: prod}}
teams: ["teams/*.yaml"]
receivers:
  out: {console: true}
  other: {console: true}
notifications: {fallback_receiver: [out, other]}
"""


def test_a_label_no_alert_carries_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        BASE + "route:\n  receiver: out\n  group_by: [team, kidn]\n  routes:\n"
        "    - {receiver: other, matchers: ['tem=\"merch\"']}\n"
        "    - {receiver: other, matchers: ['owner=\"cat\"', 'env=\"prod\"']}\n"
        "silences:\n  - {id: s, matchers: ['severty=\"info\"'], ends: 2030-01-01T00:00:00Z}\n",
    )
    with pytest.raises(ConfigError) as caught:
        build_alerting(load_settings(config), config)
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert (
        "route.group_by (line 10): group_by label 'kidn' is never set on an alert; did you mean 'kind'?"
        in message
    )
    assert (
        "route.routes.0.matchers (line 12): label 'tem' is never set on an alert; did you mean 'team'?"
        in message
    )
    assert (
        "silences.0.matchers (line 15): label 'severty' is never set on an alert; did you mean 'severity'?"
        in message
    )
    # team, source and rule labels are labels alerts carry: owner and env are fine.
    assert "owner" not in message
    assert "'env'" not in message


def test_team_rules_name_task_labels_with_file_line_and_rule(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        BASE + "route: {receiver: out}\n",
        team="team: catalog\nrules:\n  - name: f\n    type: failed\n"
        "    matchers: ['eird=~\"PRICE-.*\"', 'env=\"prod\"']\n",
    )
    with pytest.raises(ConfigError) as caught:
        build_alerting(load_settings(config), config)
    message = str(caught.value)
    assert "catalog.yaml" in message
    assert (
        "rules[0] 'f' matchers (line 5): label 'eird' is never set on a task; did you mean 'erid'?"
        in message
    )
    assert "'env'" not in message  # the source's label: tasks of that source carry it


def test_a_pattern_re2_refuses_is_found_at_load_with_file_and_line(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        BASE + "route: {receiver: out}\n",
        team="team: catalog\nrules:\n  - name: f\n    type: failed\n"
        "    matchers: ['erid=~\"(x)\\\\1\"']\n",
    )
    with pytest.raises(ConfigError) as caught:
        build_alerting(load_settings(config), config)
    assert "catalog.yaml" in str(caught.value)
    assert "rules[0] 'f' matchers (line 5)" in str(caught.value)
    assert "not valid RE2" in str(caught.value)


def test_check_fails_on_a_matcher_that_can_never_match(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        BASE + "route:\n  receiver: out\n  routes:\n"
        '    - {receiver: other, matchers: [\'team="merch",kind="UPDATE_PRODUCT"\']}\n'
        "    - {receiver: other, matchers: ['team=\"merch']}\n",
    )
    result = CliRunner().invoke(cli, ["check", "-c", str(config)])
    assert result.exit_code == 2
    assert "route.routes.1.matchers (line 12)" in result.output
    assert "never closed" in result.output


def test_silence_add_refuses_what_could_never_match(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        BASE.replace("sources:", f"state: {{path: {tmp_path / 's.db'}}}\nsources:")
        + "route: {receiver: out}\n",
    )
    runner = CliRunner()
    for bad in ('team="merch', 'team=="x"', 'tem="merch"'):
        result = runner.invoke(cli, ["silence", "add", "-c", str(config), bad])
        assert result.exit_code == 2, (bad, result.output)
    assert "did you mean 'team'?" in result.output
    result = runner.invoke(
        cli, ["silence", "add", "-c", str(config), 'team="merch",kind="UPDATE_PRODUCT"']
    )
    assert result.exit_code == 0, result.output
    assert 'team="merch", kind="UPDATE_PRODUCT"' in result.output
