"""Configuration errors a person can act on, and secrets that only fill in (issue 11 item 12,
issue 12 item 5): every bad input is a `ConfigError` naming file, line and key (or the
variable / credential file), at `check`, at start and at reload."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import structlog
from click.testing import CliRunner

from taskwarden.cli import cli
from taskwarden.config import config_loader, load_config
from taskwarden.errors import ConfigError
from taskwarden.service.daemon import Daemon

from .helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from taskwarden.simulator import Simulator

TEAM = "team: catalog\nrules:\n  - {name: f, type: failed}\n"


def write(
    tmp_path: Path, extra: str = "", *, team: bytes | str = TEAM, receivers: str = ""
) -> Path:
    (tmp_path / "teams").mkdir(exist_ok=True)
    path = tmp_path / "teams" / "catalog.yaml"
    path.write_bytes(team if isinstance(team, bytes) else team.encode())
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        f"state: {{path: {tmp_path / 'state.db'}}}\n"
        "sources:\n  dr: {base_url: 'http://127.0.0.1:9', interval: 1s}\n"
        "teams: ['teams/*.yaml']\n"
        "receivers:\n  out: {console: true}\n  spare: {console: true}\n"
        + receivers
        + "route: {receiver: out}\n"
        "notifications: {fallback_receiver: [spare, out]}\n"
        f"daemon: {{health_bind: '127.0.0.1:{free_port()}'}}\n" + extra
    )
    return config


def check(config: Path, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", "-c", str(config)], env=env)
    return result.exit_code, result.output


def test_a_team_file_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    config = write(tmp_path, team=b"team: catalog\nrules:\n  - {name: caf\xe9, type: failed}\n")
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert "catalog.yaml:3: not UTF-8 (byte 0xe9" in output
    assert "Traceback" not in output


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        receivers="  mail:\n    email:\n      from: a@example.com\n      to: b@example.com\n"
        "      smtp: {host: localhost, ca_file: /nonexistent/ca.pem}\n",
    )
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2, output
    assert "1 problem(s)" in output  # `to:` may be one address or a list
    assert "receivers.mail.email.smtp.ca_file (line 12)" in output
    assert "no such file: /nonexistent/ca.pem" in output


def test_a_key_written_twice_is_an_error_with_both_lines(tmp_path: Path) -> None:
    config = write(tmp_path, "daemon: {jitter: 0.2}\n")
    with pytest.raises(
        ConfigError, match=r"taskwarden.yaml:11: key 'daemon' appears twice .*lines 10 and 11"
    ):
        load_config(config)
    write(tmp_path, team="team: catalog\nteam: pricing\nrules: []\n")
    code, output = check(tmp_path / "taskwarden.yaml", TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert "key 'team' appears twice in the same mapping (lines 1 and 2)" in output


def test_a_misspelled_variable_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    config = write(tmp_path)
    code, output = check(
        config,
        TASKWARDEN_SOURCES__DR__API_KEY="k",
        TASKWARDEN_DEAMON__SHUTDOWN_GRACE="5s",
        TASKWARDEN_SOURCES__DR__APIKEY="k",
    )
    assert code == 2
    assert (
        "environment variable TASKWARDEN_DEAMON__SHUTDOWN_GRACE: the configuration has no setting 'deamon'; did you mean 'daemon'?"
        in output
    )
    assert (
        "environment variable TASKWARDEN_SOURCES__DR__APIKEY: sources.dr has no setting 'apikey'; did you mean 'api_key'?"
        in output
    )


def test_a_bad_value_from_a_variable_names_the_variable(tmp_path: Path) -> None:
    config = write(tmp_path)
    code, output = check(
        config, TASKWARDEN_SOURCES__DR__API_KEY="k", TASKWARDEN_DAEMON__SHUTDOWN_GRACE="soon"
    )
    assert code == 2
    assert (
        "daemon.shutdown_grace (from environment variable TASKWARDEN_DAEMON__SHUTDOWN_GRACE)"
        in output
    )


def test_leftover_credentials_never_add_sources_or_receivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "sources__dr__api_key").write_text("k")
    (credentials / "sources__old__api_key").write_text("stale")
    (credentials / "receivers__gone__slack__token").write_text("xoxb-stale")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("TASKWARDEN_SOURCES__LEGACY__API_KEY", "stale")
    config = write(tmp_path)
    loaded = load_config(config)
    assert sorted(loaded.settings.sources) == ["dr"]
    assert sorted(loaded.settings.receivers) == ["out", "spare"]
    warnings = "\n".join(loaded.warnings)
    assert "credential file sources__old__api_key is ignored: no source 'old'" in warnings
    assert (
        "credential file receivers__gone__slack__token is ignored: no receiver 'gone'" in warnings
    )
    assert "environment variable TASKWARDEN_SOURCES__LEGACY__API_KEY is ignored" in warnings
    code, output = check(config)
    assert code == 0, output
    assert "warn credential file sources__old__api_key is ignored" in output
    assert "1 source(s)" in output


def test_a_webhook_url_must_be_https_and_is_never_shown(tmp_path: Path) -> None:
    config = write(tmp_path, receivers="  hook: {slack: {}}\n")
    secret = "http://hooks.example.com/services/T0/B0/s3cr3t-path"
    code, output = check(
        config,
        TASKWARDEN_SOURCES__DR__API_KEY="k",
        TASKWARDEN_RECEIVERS__HOOK__SLACK__WEBHOOK_URL=secret,
    )
    assert code == 2
    assert "receivers.hook.slack.webhook_url" in output
    assert "must be an https:// URL" in output
    assert "s3cr3t" not in output


@pytest.mark.parametrize(
    "breakage",
    [
        "team file not UTF-8",
        "missing CA file",
        "duplicate key",
        "unknown receiver",
    ],
)
async def test_reload_rejects_any_broken_configuration_and_keeps_running(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch, breakage: str
) -> None:
    monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", "k")
    config = write(tmp_path)
    config.write_text(config.read_text().replace("http://127.0.0.1:9", sim.base_url))
    daemon = Daemon(config_loader(config), handle_signals=False)
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=20)
        good = config.read_text()
        if breakage == "team file not UTF-8":
            (tmp_path / "teams" / "catalog.yaml").write_bytes(b"team: caf\xe9\n")
        elif breakage == "missing CA file":
            config.write_text(
                good.replace(
                    "  spare: {console: true}\n",
                    "  spare: {console: true}\n  mail:\n    email:\n      from: a@example.com\n"
                    "      to: b@example.com\n      smtp: {host: localhost, ca_file: /no/ca.pem}\n",
                )
            )
        elif breakage == "duplicate key":
            config.write_text(good + "teams: []\n")
        else:
            config.write_text(good.replace("route: {receiver: out}", "route: {receiver: pager}"))
        with structlog.testing.capture_logs() as logs:
            assert await daemon.reload() is False
        [rejected] = [e for e in logs if e["event"] == "config.reload_rejected"]
        assert rejected["keeping"] == "the running configuration"
        assert daemon.alive()
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(running, timeout=20) == 0


def test_a_missing_secret_names_its_variable_and_credential_file(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "heartbeat: {interval: 1m}\n",
        receivers="  pd: {pagerduty: {}}\n  chat: {slack: {channel: alerts}}\n",
    )
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert (
        "receivers.pd.pagerduty.routing_key (line 8): Field required (a secret: give it as "
        "TASKWARDEN_RECEIVERS__PD__PAGERDUTY__ROUTING_KEY or the credential file "
        "receivers__pd__pagerduty__routing_key)"
    ) in output
    assert "token as TASKWARDEN_RECEIVERS__CHAT__SLACK__TOKEN or the credential file" in output
    assert "TASKWARDEN_HEARTBEAT__URL or the credential file heartbeat__url" in output


def test_commands_on_the_state_need_no_receiver_secrets(tmp_path: Path) -> None:
    """``state``, ``silence`` and ``migrate`` read no receiver, route or heartbeat: they
    work beside the daemon in a shell that holds none of its secrets."""
    config = write(
        tmp_path,
        "heartbeat: {interval: 1m}\n",
        receivers="  pd: {pagerduty: {}}\n  chat: {slack: {channel: alerts}}\n",
    )
    runner = CliRunner()
    leftover = {"TASKWARDEN_RECEIVERS__CHAT__SLACK__TOKEN": "xoxb-not-needed"}
    for args in (["state"], ["silence", "list"], ["migrate"]):
        result = runner.invoke(cli, [*args, "-c", str(config)], env=leftover)
        assert result.exit_code == 0, (args, result.output)
    added = runner.invoke(cli, ["silence", "add", "-c", str(config), 'team="catalog"'])
    assert added.exit_code == 0, added.output
    listed = runner.invoke(cli, ["silence", "list", "-c", str(config)])
    assert 'team="catalog"' in listed.output
    expired = runner.invoke(cli, ["silence", "expire", "-c", str(config), added.output.split()[0]])
    assert expired.exit_code == 0, expired.output
    # Labels are still checked: a silence that could never match is refused.
    typo = runner.invoke(cli, ["silence", "add", "-c", str(config), 'taem="catalog"'])
    assert typo.exit_code == 2
    assert "did you mean 'team'" in typo.output
    # The daemon's own check still wants every secret.
    assert check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")[0] == 2


def test_team_and_route_problems_are_said_together_and_in_words(tmp_path: Path) -> None:
    """A misspelled key gets a did-you-mean (team files too), a bad value says what is
    expected rather than the pattern behind it, and a broken team file does not hide the
    routing tree's problems until the next run."""
    config = write(
        tmp_path,
        "silences:\n  - {id: 'a b', matchers: ['team=\"x\"'], ends: 2030-01-01T00:00:00Z}\n",
        team="team: catalog\nrules:\n  - {name: f, type: failed, severty: critical}\n",
    )
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert "'a b' is not an id of letters, digits" in output
    assert "[A-Za-z" not in output  # no regular expression
    config.write_text(
        config.read_text()
        .replace("route: {receiver: out}", "route: {receiver: out, group_by: [teem]}")
        .split("silences:")[0]
        .replace("health_bind: '127.0.0.1:", "health_bind: 'localhost:")
    )
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert "severty (line 3): not a setting here; did you mean 'severity'?" in output
    assert "group_by label 'teem' is never set on an alert; did you mean 'team'?" in output
    config.write_text(config.read_text().replace("'localhost:", "'localhost"))
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert "is not host:port, such as 127.0.0.1:9464" in output


def test_check_reads_the_team_files_even_when_the_configuration_is_invalid(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path,
        "bogus_section: 1\n",
        team="team: catalog\nrules:\n  - {name: f, type: failed, severty: critical}\n",
    )
    code, output = check(config, TASKWARDEN_SOURCES__DR__API_KEY="k")
    assert code == 2
    assert "bogus_section" in output
    assert "severty (line 3): not a setting here; did you mean 'severity'?" in output
