"""Secrets are redacted at every sink (issue 11 item 11): log lines, rows of the state file,
notification text, /readyz and CLI output, including the forms a secret travels in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import TYPE_CHECKING

import httpx
from click.testing import CliRunner

from taskwarden.cli import cli
from taskwarden.config import config_loader
from taskwarden.logs import Redactor, configure_logging
from taskwarden.service.daemon import Daemon
from taskwarden.simulator.faults import Fault

from .conftest import API_KEY
from .helpers import until
from .test_daemon_faults import write_config

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer

BASIC_FORM = base64.b64encode(f"{API_KEY}:".encode()).decode()


def test_derived_forms_are_redacted() -> None:
    redactor = Redactor()
    hook = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"
    redactor.use([API_KEY, hook, None, "abc"])  # too short to redact ordinary words: ignored
    text = (
        f"key {API_KEY}; Authorization: Basic {BASIC_FORM}; url-escaped {API_KEY.replace('_', '%5F')}; "
        f"bad URL {hook}; path only /services/T000/B000/XXXXsecretXXXX; abc stays"
    )
    said = redactor(text)
    assert API_KEY not in said
    assert BASIC_FORM not in said
    assert "XXXXsecretXXXX" not in said
    assert "abc stays" in said
    redactor.use([])  # a reload with other secrets: the set is replaced, not grown
    assert redactor(API_KEY) == API_KEY


async def test_a_key_a_server_echoes_back_reaches_no_sink(
    tmp_path: Path,
    sim: Simulator,
    slack: SlackServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The API rejects the key and says it back, plain and as the Basic header: the
    credential alert goes out (to ops), and neither form is in it, in the state file, in
    the log or on /readyz."""
    monkeypatch.setenv("TASKWARDEN_SOURCES__DR__API_KEY", API_KEY)
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__SLACK__SLACK__TOKEN", slack.token)
    redactor = configure_logging(json_output=True, level="debug")
    sim.unfreeze_clock()
    sim.inject(Fault("echo_credentials", remaining=10_000, endpoint="dr.list"))
    config = write_config(tmp_path, sim, slack, state=tmp_path / "state.db")
    daemon = Daemon(config_loader(config), redactor=redactor, handle_signals=False)
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=20)
        await until(lambda: any("rejects taskwarden" in m.text for m in slack.messages))
        alert = next(m for m in slack.messages if "rejects taskwarden" in m.text)
        assert "The API key *** is invalid" in alert.raw  # the server's words, redacted
        assert daemon.health_url is not None
        async with httpx.AsyncClient() as client:
            readyz = (await client.get(f"{daemon.health_url}/readyz")).text
        assert "***" in readyz
    finally:
        daemon.request_stop()
        await asyncio.wait_for(running, timeout=20)
    stored = b"".join(
        p.read_bytes()
        for p in tmp_path.glob("state.db*")  # noqa: ASYNC240 - the daemon has stopped
        if not p.name.endswith(".lock")
    )
    logged = capsys.readouterr().err
    for form in (API_KEY, BASIC_FORM):
        for where, text in (("Slack", alert.raw), ("/readyz", readyz), ("log", logged)):
            assert form not in text, (form, where)
        assert form.encode() not in stored, form
    assert "The API key *** is invalid" in logged


def test_cli_output_never_shows_a_webhook_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook URL a client library refuses (a port out of range) is named in its error;
    test-notify says the error without the URL."""
    config = tmp_path / "taskwarden.yaml"
    config.write_text(
        "sources: {dr: {}}\nreceivers:\n  hook: {slack: {}}\n  spare: {console: true}\n"
        "route: {receiver: hook}\nnotifications: {fallback_receiver: [spare, hook]}\n"
    )
    secret = "https://hooks.example.com:99999/services/T0/B0/s3cr3t-token-path"
    monkeypatch.setenv("TASKWARDEN_RECEIVERS__HOOK__SLACK__WEBHOOK_URL", secret)
    result = CliRunner().invoke(cli, ["test-notify", "-c", str(config), "hook"])
    assert result.exit_code == 1, result.output
    assert "FAIL hook" in result.output
    assert "s3cr3t-token-path" not in result.output
    assert "hooks.example.com:99999" not in result.output


def test_redaction_reaches_the_state_rows(tmp_path: Path) -> None:
    """Even without the log, what the store writes is redacted (a poll error, a delivery
    error, an alert's text)."""
    from datetime import UTC, datetime

    from taskwarden.state import open_state

    redactor = Redactor()
    redactor.use([API_KEY])
    now = datetime(2026, 3, 1, tzinfo=UTC)
    with contextlib.closing(open_state(tmp_path / "s.db", now=now, redactor=redactor)) as store:
        store.record_poll_failure("dr", now, f"HTTP 401: key {API_KEY} refused")
    assert API_KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.glob("s.db*"))
