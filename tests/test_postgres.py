"""PostgreSQL-only matters (the shared contract is in test_store_contract.py): schema
versions and `taskwarden migrate`, dropped connections, writers on two connections, and the
commands against a database that replicas use."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import psycopg
import pytest
from click.testing import CliRunner

from taskwarden.alerts import Alert, Severity
from taskwarden.cli import cli
from taskwarden.errors import SchemaTooNewError, StateMissingError, StateUnavailableError
from taskwarden.routing import AlertBatch, Destination, RoutedAlert, Timing
from taskwarden.state.postgres import (
    RECONNECT_PAUSE,
    PgConnection,
    PostgresStateStore,
    connect,
    open_postgres,
)
from taskwarden.state.schema import SCHEMA_VERSION

from .conftest import API_KEY, T0
from .pgserver import PgServer

if TYPE_CHECKING:
    from pathlib import Path


def config_file(tmp_path: Path, url: str, base_url: str = "http://127.0.0.1:9") -> Path:
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"""\
state: {{url: "{url}"}}
sources:
  dr: {{base_url: "{base_url}", retry_attempts: 1}}
receivers:
  ops: {{console: true}}
route: {{receiver: ops}}
"""
    )
    return config


ENV = {"TASKWARDEN_SOURCES__DR__API_KEY": API_KEY}


def test_a_database_without_the_schema_is_refused_until_migrated(pg_url: str) -> None:
    with pytest.raises(StateMissingError, match="run `taskwarden migrate`"):
        open_postgres(pg_url)
    with open_postgres(pg_url, apply_migrations=True) as store:
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    open_postgres(pg_url, apply_migrations=True).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(SchemaTooNewError, match="schema version 99"):
        open_postgres(pg_url)


def test_the_migrate_command_applies_once(tmp_path: Path, pg_url: str) -> None:
    config = config_file(tmp_path, pg_url)
    first = CliRunner().invoke(cli, ["migrate", "-c", str(config)], env=ENV)
    assert first.exit_code == 0, first.output
    assert f"applied v{SCHEMA_VERSION}; schema v{SCHEMA_VERSION}" in first.output
    again = CliRunner().invoke(cli, ["migrate", "-c", str(config)], env=ENV)
    assert f"schema v{SCHEMA_VERSION}, nothing to do" in again.output
    assert "taskwarden@" not in first.output + again.output  # no user or password shown


def test_a_password_in_the_url_is_a_configuration_error(tmp_path: Path, pg_url: str) -> None:
    leaky = pg_url.replace("taskwarden@", "taskwarden:hunter2@")
    result = CliRunner().invoke(cli, ["check", "-c", str(config_file(tmp_path, leaky))], env=ENV)
    assert result.exit_code == 2
    assert "state.url" in result.output
    assert "must not contain a password" in result.output
    assert "hunter2" not in result.output


def test_a_dropped_connection_fails_one_call_and_the_next_reconnects(pg_url: str) -> None:
    with open_postgres(pg_url, apply_migrations=True) as store:
        store.set_meta("probe", "1")
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StateUnavailableError):
            store.get_meta("probe")
        assert store.get_meta("probe") == "1"
        store.probe_write()


def test_writers_on_several_connections_build_one_group_and_tell_each_alert_once(
    pg_url: str,
) -> None:
    """Four replicas raise four alerts of one new group at the same moment: the writer
    lock serializes them (without it, two create the group at once and one fails with a
    unique violation), and every alert is told."""
    open_postgres(pg_url, apply_migrations=True).close()
    timing = Timing(group_wait=timedelta(0), group_interval=timedelta(0))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def replica(key: str) -> None:
        alert = Alert(
            key=key, rule="failed", source="dr", severity=Severity.CRITICAL,
            labels=(("team", "catalog"),), title=key, one_shot=False, starts_at=T0,
        )  # fmt: skip
        batch = AlertBatch(fired=(RoutedAlert(alert, (Destination("ops", "ops|g", (), timing),)),))
        try:
            with open_postgres(pg_url) as store:
                barrier.wait()
                store.apply_alerts(batch, T0)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=replica, args=(f"k{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    with open_postgres(pg_url) as store:
        told = [a.key for item in store.due_notifications(T0) for a in item.notification.firing]
        groups = store.db.execute("SELECT COUNT(*) FROM groups").fetchone()[0]
    assert set(told) == {"k0", "k1", "k2", "k3"}  # follow-ups repeat the firing ones
    assert groups == 1


def test_state_shows_who_holds_what_and_dry_runs_write_nothing(tmp_path: Path, pg_url: str) -> None:
    with open_postgres(pg_url, apply_migrations=True) as store:
        store.claim("replica-a:1:ab", ["source:dr"], T0, timedelta(seconds=15))
    config = config_file(tmp_path, pg_url)
    shown = CliRunner().invoke(cli, ["state", "-c", str(config)], env=ENV)
    assert shown.exit_code == 0, shown.output
    assert "source:dr" in shown.output
    assert "replica-a:1:ab (epoch 1" in shown.output
    as_json = CliRunner().invoke(cli, ["state", "--json", "-c", str(config)], env=ENV)
    assert json.loads(as_json.output)["leases"][0]["owner"] == "replica-a:1:ab"
    with psycopg.connect(pg_url) as conn:
        before = conn.execute("SELECT COUNT(*) FROM replicas").fetchone()
    dry = CliRunner().invoke(cli, ["once", "--dry-run", "-c", str(config)], env=ENV)
    assert dry.exit_code == 1, dry.output  # the vendor address answers nothing
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM replicas").fetchone() == before
        assert conn.execute("SELECT COUNT(*) FROM sources").fetchone() == (0,)


def test_silences_are_added_listed_and_expired_on_the_shared_database(
    tmp_path: Path, pg_url: str
) -> None:
    open_postgres(pg_url, apply_migrations=True).close()
    config = str(config_file(tmp_path, pg_url))
    added = CliRunner().invoke(
        cli, ["silence", "add", "-c", config, 'source="dr"', "--comment", "deploy"], env=ENV
    )
    assert added.exit_code == 0, added.output
    silence_id = added.output.split()[0]
    with open_postgres(pg_url) as store:  # what every replica reads at its next flush
        assert [s.silence_id for s in store.silences()] == [silence_id]
    listed = CliRunner().invoke(cli, ["silence", "list", "-c", config], env=ENV)
    assert silence_id in listed.output
    assert "active" in listed.output
    expired = CliRunner().invoke(cli, ["silence", "expire", "-c", config, silence_id], env=ENV)
    assert expired.exit_code == 0, expired.output
    listed = CliRunner().invoke(cli, ["silence", "list", "-c", config], env=ENV)
    assert "no silences" in listed.output


def test_queries_are_planned_with_their_values_never_as_generic_prepared_plans(
    pg_url: str,
) -> None:
    """Once prepared (psycopg prepares a statement run 5 times), PostgreSQL may use a generic
    plan; for `tracked`'s 500-id IN list that plan scanned every task: 3.3 s a call at
    100,000 tasks (bench/replicas.py's busy cycle). Single statements are never prepared."""
    with open_postgres(pg_url, apply_migrations=True) as store:
        for _ in range(10):
            store.tracked("dr", [f"t{i}" for i in range(600)])
            store.source_view("dr")
        prepared = store.db.execute("SELECT statement FROM pg_prepared_statements").fetchall()
    assert [row[0] for row in prepared] == []


def test_an_unreachable_server_is_tried_once_per_pause_and_found_again() -> None:
    """The store is synchronous: while PostgreSQL is down, a connection attempt is made at
    most once per RECONNECT_PAUSE (the calls between fail at once, not after a timeout
    each), and the first call after the pause reconnects."""
    server = PgServer().start()
    try:
        url = server.new_database()
        open_postgres(url, apply_migrations=True).close()
        attempts: list[float] = []
        clock = [0.0]

        def opener() -> PgConnection:
            attempts.append(clock[0])
            return connect(url, None)

        store = PostgresStateStore(opener, "test", monotonic=lambda: clock[0])
        server.kill()
        with pytest.raises(StateUnavailableError):
            store.get_meta("schema_version")  # the open connection is found dead
        with pytest.raises(StateUnavailableError):
            store.get_meta("schema_version")  # one attempt to reconnect, refused
        with pytest.raises(
            StateUnavailableError, match=r"the next attempt to reach test is in 5\.0s"
        ):
            store.get_meta("schema_version")  # no attempt within the pause
        assert attempts == [0.0, 0.0]
        server.resume()
        clock[0] += RECONNECT_PAUSE
        assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert attempts == [0.0, 0.0, RECONNECT_PAUSE]
        store.close()
    finally:
        server.close()
