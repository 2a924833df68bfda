"""The pure core of alerting: matchers, rules, routing, group flushing, team files."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from taskwarden.alerts import (
    Alert,
    AlertState,
    Severity,
    decode_notification,
    encode_notification,
)
from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared
from taskwarden.errors import ConfigError, ServerError, StateError
from taskwarden.health import HealthSettings, source_health
from taskwarden.matchers import Matcher, parse_all
from taskwarden.model import Phase, Problem, Product, Task, TaskDetails
from taskwarden.routing import (
    NO_SILENCES,
    GroupState,
    Member,
    Route,
    Silence,
    Silences,
    Timing,
    compile_routes,
    destinations,
    plan_flush,
)
from taskwarden.rules import BurstRule, FailedRule, RuleInput, StuckRule, Team, evaluate
from taskwarden.teams import load_team_file

from .conftest import T0

if TYPE_CHECKING:
    from pathlib import Path


def task(task_id: str, status: str = "FAILED", kind: str = "DEPLOY_PRODUCT", **kw: object) -> Task:
    phase = {"FAILED": Phase.FAILED, "COMPLETED": Phase.SUCCEEDED}.get(status, Phase.OPEN)
    return Task(
        source="dr",
        task_id=task_id,
        status=status,
        phase=phase,
        kind=kind,
        received_time=kw.pop("received", T0 - timedelta(hours=1)),  # type: ignore[arg-type]
        finished_time=T0 if phase.is_terminal else None,
        products=(Product("1001", "sku-1", "INDIVIDUAL"),),
        uri=f"https://api.digitalriver.com/v1/products/tasks/{task_id}",
    )


def failed(t: Task) -> StatusChanged:
    return StatusChanged(t, old="PROCESSING", new=t.status, old_phase=Phase.OPEN)


CATALOG = Team(
    "catalog",
    rules=(
        FailedRule(
            "deploys",
            "catalog",
            matchers=parse_all(['kind=~"DEPLOY_PRODUCT|RETIRE_PRODUCT"']),
            severity=Severity.CRITICAL,
        ),
        FailedRule("other-failures", "catalog"),
        StuckRule(
            "stuck",
            "catalog",
            after=timedelta(hours=2),
            after_by_kind={"IMPORT": timedelta(hours=6)},
        ),
    ),
)


class TestMatchers:
    @pytest.mark.parametrize(
        ("text", "labels", "expected"),
        [
            ('kind="DEPLOY_PRODUCT"', {"kind": ("DEPLOY_PRODUCT",)}, True),
            ("kind=DEPLOY_PRODUCT", {"kind": ("DEPLOY_PRODUCT",)}, True),
            ('kind!="DEPLOY_PRODUCT"', {"kind": ("DEPLOY_PRODUCT",)}, False),
            ('kind=~"DEPLOY_.*"', {"kind": ("DEPLOY_PRODUCT",)}, True),
            ('kind=~"DEPLOY"', {"kind": ("DEPLOY_PRODUCT",)}, False),  # anchored
            ('erid!~"test-.*"', {"erid": ("sku-1", "test-2")}, False),  # any value matches
            ('erid=~"test-.*"', {"erid": ("sku-1", "test-2")}, True),
            ('team="x"', {}, False),
            ('team!="x"', {}, True),
            ('team=~".*"', {}, True),
        ],
    )
    def test_semantics(self, text: str, labels: dict[str, tuple[str, ...]], expected: bool) -> None:
        assert Matcher.parse(text).matches(labels) is expected

    @pytest.mark.parametrize("text", ["kind", '=~"x"', 'kind=~"("'])
    def test_invalid(self, text: str) -> None:
        with pytest.raises(ValueError, match="matcher"):
            Matcher.parse(text)

    def test_round_trip(self) -> None:
        m = Matcher.parse('desc=~"a \\"quoted\\" .*"')
        assert Matcher.parse(str(m)) == m


class TestFailedRule:
    def test_first_matching_rule_decides_severity(self) -> None:
        events = [failed(task("t1")), failed(task("t2", kind="UPDATE_PRODUCT"))]
        out = evaluate([CATALOG], RuleInput("dr", events, T0))
        by_task = {a.tasks[0].task_id: a for a in out.fired}
        assert by_task["t1"].severity is Severity.CRITICAL
        assert by_task["t1"].rule == "deploys"
        assert by_task["t2"].severity is Severity.WARNING
        assert by_task["t2"].rule == "other-failures"
        assert dict(by_task["t1"].labels)["team"] == "catalog"

    def test_baseline_and_open_tasks_do_not_alert(self) -> None:
        events = [failed(task("t1")), TaskAppeared(task("t2", status="PROCESSING"))]
        assert not evaluate([CATALOG], RuleInput("dr", events, T0, baseline=True)).fired
        assert len(evaluate([CATALOG], RuleInput("dr", events, T0)).fired) == 1

    def test_task_first_seen_failed_alerts(self) -> None:
        out = evaluate([CATALOG], RuleInput("dr", [TaskAppeared(task("t9"))], T0))
        assert [a.key for a in out.fired] == ["failed/catalog/deploys/dr/t9/FAILED"]

    def test_details_enrich_or_say_unavailable(self) -> None:
        t1, t2 = task("t1"), task("t2")
        details = {
            "t1": TaskDetails(t1, deployment_errors=(Problem("E42", "price missing"),)),
            "t2": "the vendor API call failed (500)",
        }
        out = evaluate([CATALOG], RuleInput("dr", [failed(t1), failed(t2)], T0, details=details))
        facts = {a.tasks[0].task_id: a.tasks[0] for a in out.fired}
        assert facts["t1"].deployment_errors == (Problem("E42", "price missing"),)
        assert facts["t2"].details_unavailable == "the vendor API call failed (500)"


class TestStuckRule:
    def test_fires_past_threshold_per_kind_and_once(self) -> None:
        old = task("t1", status="PROCESSING", received=T0 - timedelta(hours=3))
        old_import = task(
            "t2", status="PROCESSING", kind="IMPORT", received=T0 - timedelta(hours=3)
        )
        events = [StillOpen(old, timedelta(hours=3)), StillOpen(old_import, timedelta(hours=3))]
        out = evaluate([CATALOG], RuleInput("dr", events, T0))
        assert [a.key for a in out.fired] == ["stuck/catalog/stuck/dr/t1"]
        active = {a.key: a for a in out.fired}
        again = evaluate([CATALOG], RuleInput("dr", events, T0, active=active))
        assert not again.fired

    def test_resolves_with_how_it_ended(self) -> None:
        t = task("t1", status="PROCESSING", received=T0 - timedelta(hours=3))
        fired = evaluate([CATALOG], RuleInput("dr", [StillOpen(t, timedelta(hours=3))], T0)).fired
        done = task("t1", status="COMPLETED", received=T0 - timedelta(hours=3))
        change = StatusChanged(done, old="PROCESSING", new="COMPLETED", old_phase=Phase.OPEN)
        out = evaluate([CATALOG], RuleInput("dr", [change], T0, active={fired[0].key: fired[0]}))
        assert len(out.resolved) == 1
        assert out.resolved[0].state is AlertState.RESOLVED
        assert out.resolved[0].note == "finished COMPLETED after 3h 0m"


class TestBurstRule:
    TEAM = Team(
        "catalog",
        rules=(
            FailedRule("failures", "catalog"),
            BurstRule("burst", "catalog", threshold=10, window=timedelta(minutes=15)),
        ),
    )

    def test_burst_fires_once_and_inhibits_the_individual_alerts(self) -> None:
        events = [
            failed(task(f"t{i}", kind="IMPORT" if i % 3 else "DEPLOY_PRODUCT")) for i in range(12)
        ]
        out = evaluate([self.TEAM], RuleInput("dr", events, T0))
        bursts = [a for a in out.fired if a.rule == "burst"]
        assert len(bursts) == 1
        assert bursts[0].total == 12
        assert dict(bursts[0].counts) == {"IMPORT": 8, "DEPLOY_PRODUCT": 4}
        assert len(bursts[0].tasks) == 5
        assert len(out.inhibited) == 12

    def test_counts_earlier_cycles_and_resolves_when_quiet(self) -> None:
        earlier = [(T0 - timedelta(minutes=5), task(f"e{i}")) for i in range(8)]
        out = evaluate(
            [self.TEAM],
            RuleInput("dr", [failed(task("n1")), failed(task("n2"))], T0, recent_failures=earlier),
        )
        burst = next(a for a in out.fired if a.rule == "burst")
        assert burst.total == 10
        later = T0 + timedelta(minutes=30)
        quiet = evaluate([self.TEAM], RuleInput("dr", [], later, active={burst.key: burst}))
        assert [a.key for a in quiet.resolved] == [burst.key]


class TestHealth:
    def test_unreachable_after_threshold_then_resolved(self) -> None:
        settings = HealthSettings(unreachable_after=timedelta(minutes=15))
        error = ServerError("500", source="dr", status_code=500)
        early = source_health(
            "dr",
            error,
            failing_since=T0,
            now=T0 + timedelta(minutes=5),
            active={},
            settings=settings,
        )
        assert not early.fired
        late = source_health(
            "dr",
            error,
            failing_since=T0,
            now=T0 + timedelta(minutes=16),
            active={},
            settings=settings,
        )
        assert [a.key for a in late.fired] == ["health/unreachable/dr"]
        assert dict(late.fired[0].labels)["team"] == "ops"
        active = {a.key: a for a in late.fired}
        ok = source_health(
            "dr",
            None,
            failing_since=None,
            now=T0 + timedelta(minutes=20),
            active=active,
            settings=settings,
        )
        assert [a.key for a in ok.resolved] == ["health/unreachable/dr"]


def alert(key: str, **labels: str) -> Alert:
    return Alert(
        key=key,
        rule=labels.get("rule", "r"),
        source="dr",
        severity=Severity.WARNING,
        labels=tuple(sorted(labels.items())),
        title=key,
    )


class TestRouting:
    TREE = Route(
        receiver="default",
        group_by=("team",),
        routes=(
            Route(receiver="ops", matchers=parse_all(['team="ops"'])),
            Route(
                receiver="catalog-slack",
                matchers=parse_all(['team="catalog"']),
                continue_matching=True,
            ),
            Route(
                receiver="catalog-mail",
                matchers=parse_all(['team="catalog"', 'severity="critical"']),
            ),
        ),
    )

    def test_first_match_continue_and_default(self) -> None:
        def receivers(**labels: str) -> list[str]:
            return [
                d.receiver
                for d in destinations(compile_routes(self.TREE), tuple(sorted(labels.items())))
            ]

        assert receivers(team="ops") == ["ops"]
        assert receivers(team="catalog", severity="warning") == ["catalog-slack"]
        assert receivers(team="catalog", severity="critical") == ["catalog-slack", "catalog-mail"]
        assert receivers(team="pricing") == ["default"]

    def test_group_key_uses_group_by_labels_only(self) -> None:
        a = destinations(compile_routes(self.TREE), (("kind", "A"), ("team", "pricing")))[0]
        b = destinations(compile_routes(self.TREE), (("kind", "B"), ("team", "pricing")))[0]
        assert a.group_key == b.group_key
        assert a.group_labels == (("team", "pricing"),)


class TestFlushPlan:
    GROUP = GroupState(
        1,
        "slack",
        "k",
        (),
        Timing(timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=4)),
        created_at=T0,
    )

    def test_waits_group_wait_then_one_message_for_all(self) -> None:
        assert not self.GROUP.is_due(T0 + timedelta(seconds=29))
        assert self.GROUP.is_due(T0 + timedelta(seconds=30))
        members = [Member(alert(f"a{i}", kind="DEPLOY")) for i in range(25)]
        plan = plan_flush(self.GROUP, members, NO_SILENCES, T0 + timedelta(seconds=30))
        assert plan.notification is not None
        assert plan.notification.firing_total == 25
        assert len(plan.notification.firing) == 10
        assert plan.notification.counts == (("DEPLOY", 25),)
        assert set(plan.removed.values()) == {"notified"}  # one-shots leave the group

    def test_silence_suppresses_one_shot_and_delays_stateful(self) -> None:
        silence = Silence("s1", parse_all(['kind="DEPLOY"']), T0, T0 + timedelta(hours=1))
        stateful = Alert(
            key="st",
            rule="stuck",
            source="dr",
            severity=Severity.WARNING,
            labels=(("kind", "DEPLOY"),),
            title="st",
            one_shot=False,
        )
        members = [Member(alert("a1", kind="DEPLOY")), Member(stateful)]
        plan = plan_flush(self.GROUP, members, Silences([silence]), T0 + timedelta(minutes=1))
        assert plan.notification is None
        assert plan.removed == {"a1": "silenced"}
        assert plan.notified == {"st": ""}
        after = plan_flush(
            self.GROUP, [Member(stateful)], Silences([silence]), T0 + timedelta(hours=2)
        )
        assert after.notification is not None
        assert after.notification.firing[0].key == "st"

    def test_repeat_after_repeat_interval_and_resolved(self) -> None:
        stateful = Alert(
            key="st",
            rule="stuck",
            source="dr",
            severity=Severity.WARNING,
            labels=(),
            title="st",
            one_shot=False,
        )
        sent = GroupState(
            **{
                **{s: getattr(self.GROUP, s) for s in GroupState.__slots__},
                "last_flush": T0,
                "last_sent": T0,
                "messages": 1,
            }
        )
        quiet = plan_flush(sent, [Member(stateful, "firing")], NO_SILENCES, T0 + timedelta(hours=1))
        assert quiet.notification is None
        repeat = plan_flush(
            sent, [Member(stateful, "firing")], NO_SILENCES, T0 + timedelta(hours=4)
        )
        assert repeat.notification is not None
        assert repeat.notification.repeat
        assert repeat.notification.follow_up
        done = stateful.resolved(T0, "finished")
        resolved = plan_flush(sent, [Member(done, "firing")], NO_SILENCES, T0 + timedelta(hours=1))
        assert resolved.notification is not None
        assert resolved.notification.only_resolved
        assert resolved.removed == {"st": "resolved"}


def test_notification_round_trips_and_refuses_newer_payloads() -> None:
    members = [Member(alert("a1", kind="DEPLOY"))]
    plan = plan_flush(TestFlushPlan.GROUP, members, NO_SILENCES, T0 + timedelta(minutes=1))
    assert plan.notification is not None
    text = encode_notification(plan.notification)
    assert decode_notification(text) == plan.notification
    with pytest.raises(StateError, match="payload version 99"):
        decode_notification(text.replace('"v":1', '"v":99'))


class TestTeamFiles:
    def test_valid_file(self, tmp_path: Path) -> None:
        path = tmp_path / "catalog.yaml"
        path.write_text(
            "team: catalog\nrules:\n"
            "  - {name: deploys, type: failed, severity: critical,\n"
            "     matchers: ['kind=~\"DEPLOY_.*\"']}\n"
            "  - {name: stuck, type: stuck, after: 2h, after_by_kind: {PRODUCT_IMPORT: 6h}}\n"
            "  - {name: burst, type: burst, threshold: 20, window: 15m}\n"
        )
        team = load_team_file(path)
        assert [type(r).__name__ for r in team.rules] == ["FailedRule", "StuckRule", "BurstRule"]
        stuck = team.rules[1]
        assert isinstance(stuck, StuckRule)
        assert stuck.threshold("PRODUCT_IMPORT") == timedelta(hours=6)

    def test_invalid_rules_name_file_rule_and_reason(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(
            "team: catalog\nrules:\n"
            "  - {name: deploys, type: failed, matchers: ['kind=~\"(\"']}\n"
            "  - {name: stuck-imports, type: stuck, after: soon}\n"
            "  - {name: burst, type: burst, threshold: 1, window: 15m}\n"
        )
        with pytest.raises(ConfigError) as caught:
            load_team_file(path)
        message = str(caught.value)
        assert str(path) in message
        assert "rules[0] 'deploys' matchers" in message
        assert "not valid RE2" in message
        assert "rules[1] 'stuck-imports' after" in message
        assert "not a duration" in message
        assert "rules[2] 'burst' threshold" in message
