"""amtool habits on the state (issue 16): ``taskwarden alerts`` and ``silence add|query|
update`` with headers, ``-o json``, ``--start`` / ``--end`` / ``--duration`` — beside the
daemon and without the receivers' secrets."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING

from click.testing import CliRunner

from taskwarden.alerts import Alert, Severity
from taskwarden.cli import cli
from taskwarden.routing import AlertBatch, Destination, RoutedAlert, Timing
from taskwarden.state import open_state
from taskwarden.timeutil import format_api_time, utc_now

if TYPE_CHECKING:
    from pathlib import Path

TEAMS = {
    "catalog": "team: catalog\nrules:\n  - {name: deploys, type: failed, severity: critical}\n",
    "pricing": "team: pricing\nrules:\n  - {name: stuck, type: stuck, after: 2h}\n",
}


def configured(tmp_path: Path) -> Path:
    (tmp_path / "teams").mkdir()
    for team, text in TEAMS.items():
        (tmp_path / "teams" / f"{team}.yaml").write_text(text)
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"state: {{path: {tmp_path / 'state.db'}}}\n"
        "sources: {dr: {base_url: 'http://127.0.0.1:9'}}\n"
        "teams: ['teams/*.yaml']\n"
        "receivers: {chat: {slack: {channel: alerts}}}\n"  # its token is not needed here
        "route: {receiver: chat}\n"
    )
    return config


def fire(tmp_path: Path, *alerts: Alert) -> None:
    now = utc_now()
    store = open_state(tmp_path / "state.db", now=now)
    timing = Timing(group_wait=timedelta(hours=1))
    try:
        for alert in alerts:
            team = dict(alert.labels)["team"]
            where = Destination("chat", f"chat|{team}", (("team", team),), timing)
            store.apply_alerts(AlertBatch(fired=(RoutedAlert(alert, (where,)),)), now)
    finally:
        store.close()


def alert(team: str, rule: str, title: str, *, one_shot: bool) -> Alert:
    return Alert(
        key=f"{team}/{rule}", rule=rule, source="dr", severity=Severity.WARNING,
        labels=(("rule", rule), ("team", team)), title=title, one_shot=one_shot,
        starts_at=utc_now() - timedelta(minutes=7),
    )  # fmt: skip


def invoke(*args: str, user: str = "ana") -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env={"USER": user})
    return result.exit_code, result.output


def test_alerts_as_a_table_or_json_filtered_by_matchers(tmp_path: Path) -> None:
    config = configured(tmp_path)
    assert invoke("alerts", "-c", str(config)) == (0, "no alerts\n")
    fire(
        tmp_path,
        alert("catalog", "deploys", "DEPLOY_PRODUCT failed: SKU-1", one_shot=True),
        alert("pricing", "stuck", "UPDATE_PRICE stuck in PROCESSING", one_shot=False),
    )
    code, shown = invoke("alerts", "-c", str(config))
    assert code == 0, shown
    header, *rows = shown.splitlines()
    assert header.split() == ["STATUS", "SEVERITY", "TEAM", "RULE", "AGE", "OUTCOME", "TITLE"]
    assert len(rows) == 2
    assert any(
        r.split()[:6] == ["firing", "warning", "pricing", "stuck", "7m", "pending"] for r in rows
    )
    code, only = invoke("alerts", "-c", str(config), 'team="catalog"', "-o", "json")
    assert code == 0
    [catalog] = json.loads(only)
    assert catalog["title"] == "DEPLOY_PRODUCT failed: SKU-1"
    assert catalog["receivers"] == [
        {"receiver": "chat", "told": None, "groupLabels": {"team": "catalog"}, "lastSentAt": None}
    ]
    code, bad = invoke("alerts", "-c", str(config), "team=~(")
    assert code == 2
    assert "column" in bad


def test_silences_with_start_end_query_and_update(tmp_path: Path) -> None:
    config = configured(tmp_path)
    start = utc_now() + timedelta(hours=1)
    code, added = invoke(
        "silence", "add", "-c", str(config), 'team="catalog"', "--start",
        format_api_time(start), "--duration", "1h30m", "--comment", "release", "-o", "json",
    )  # fmt: skip
    assert code == 0, added
    silence = json.loads(added)
    assert silence["status"] == "pending"
    assert silence["endsAt"] == format_api_time(start + timedelta(minutes=90))
    assert silence["createdBy"] == "ana"  # $USER
    code, other = invoke("silence", "add", "-c", str(config), 'team="pricing"', "--end",
                         format_api_time(utc_now() + timedelta(hours=3)))  # fmt: skip
    assert code == 0, other
    code, queried = invoke("silence", "query", "-c", str(config), 'team="catalog"')
    header, *rows = queried.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "ENDS"]
    assert [r.split()[0] for r in rows] == [silence["id"]]
    assert "pending" in rows[0]
    code, extended = invoke(
        "silence", "update", "-c", str(config), silence["id"], "--duration", "6h"
    )
    assert code == 0, extended
    assert format_api_time(start + timedelta(hours=6)) in extended
    listed = json.loads(invoke("silence", "list", "-c", str(config), "-o", "json")[1])
    assert {s["id"]: s["comment"] for s in listed}[silence["id"]] == "release"
    assert len(listed) == 2
    code, nothing = invoke("silence", "update", "-c", str(config), silence["id"])
    assert code == 2
    assert "nothing to update" in nothing
    code, backwards = invoke(
        "silence", "update", "-c", str(config), silence["id"], "--end", format_api_time(start)
    )
    assert code == 2
    assert "must end after it starts" in backwards
    assert invoke("silence", "update", "-c", str(config), "nope", "--duration", "1h")[0] == 2
    code, bad_time = invoke("silence", "add", "-c", str(config), 'team="x"', "--start", "soon")
    assert code == 2
    assert "is not a time such as" in bad_time
