"""The operator's surface (issue 16): the status page and the JSON API on the health port of
a real daemon (against the simulator and a loopback Slack), the page rendered by a real
headless Chromium, and the bearer-token rule for writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx
import pytest
from click.testing import CliRunner

from taskwarden.cli import cli

from .helpers import free_port, running_daemon, until
from .test_daemon import slack_daemon

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from taskwarden.simulator import Simulator
    from taskwarden.simulator.slack import SlackServer

TOKEN = "api-t0ken-for-silences"
EVIL_ERID = "<script>alert(1)</script>"


@contextlib.asynccontextmanager
async def daemon_with_a_failure(
    tmp_path: Path,
    sim: Simulator,
    slack: SlackServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    token: str | None,
) -> AsyncIterator[tuple[str, Path]]:
    sim.unfreeze_clock()
    health = free_port()
    config = slack_daemon(tmp_path, sim, slack, monkeypatch, health)
    if token is not None:
        monkeypatch.setenv("TASKWARDEN_DAEMON__API_TOKEN", token)
    async with running_daemon(config) as (daemon, running):
        await until(lambda: daemon.readiness() == {"dr": "ok"})
        products = [{"productId": "1001", "externalReferenceId": EVIL_ERID}]
        sim.add_task(status="FAILED", request_type="DEPLOY_PRODUCT", products=products)
        await slack.wait_for(1, within=20)
        yield f"http://127.0.0.1:{health}", config
    assert running.result() == 0


async def test_the_api_shows_sources_alerts_and_the_outbox(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        daemon_with_a_failure(tmp_path, sim, slack, monkeypatch, token=None) as (base, _),
        httpx.AsyncClient(base_url=base, timeout=5) as client,
    ):
        status = (await client.get("/api/v1/status")).json()
        [source] = status["sources"]
        assert source["source"] == "dr"
        assert source["health"] == "ok"
        assert source["lastSuccess"] is not None
        [failed] = status["alerts"]
        assert failed["labels"]["team"] == "catalog"
        assert failed["title"] == f"DEPLOY_PRODUCT failed: {EVIL_ERID}"
        assert failed["outcome"] == "notified"
        assert [e["state"] for e in status["outbox"]] == ["sent"]
        assert status["outbox"][0]["receiver"] == "slack"
        assert status["ready"] is True
        filtered = await client.get("/api/v1/alerts", params={"filter": 'team="catalog"'})
        assert [a["key"] for a in filtered.json()] == [failed["key"]]
        none = await client.get("/api/v1/alerts", params={"filter": '{team="pricing"}'})
        assert none.json() == []
        bad = await client.get("/api/v1/alerts", params={"filter": "team=~("})
        assert bad.status_code == 400
        assert "filter: " in bad.json()["error"]
        # No token configured: the API is read-only.
        refused = await client.post("/api/v1/silences", json={"matchers": 'team="catalog"'})
        assert refused.status_code == 403
        assert "daemon.api_token" in refused.json()["error"]


async def test_silences_through_the_api_need_the_bearer_token(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        daemon_with_a_failure(tmp_path, sim, slack, monkeypatch, token=TOKEN) as (base, config),
        httpx.AsyncClient(base_url=base, timeout=5) as client,
    ):
        body = {"matchers": ['team="catalog"', 'kind=~"DEPLOY_.*"'], "duration": "90m",
                "comment": "release night", "createdBy": "ana"}  # fmt: skip
        assert (await client.post("/api/v1/silences", json=body)).status_code == 401
        wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
        assert (await client.post("/api/v1/silences", json=body, headers=wrong)).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        created = await client.post("/api/v1/silences", json=body, headers=auth)
        assert created.status_code == 201, created.text
        silence = created.json()
        assert silence["matchers"] == ['team="catalog"', 'kind=~"DEPLOY_.*"']
        assert silence["status"] == "active"
        listed = (await client.get("/api/v1/silences")).json()
        assert [s["id"] for s in listed] == [silence["id"]]
        # The same silence, as the command line sees it in the state.
        shown = CliRunner().invoke(cli, ["silence", "list", "-c", str(config)])
        assert silence["id"] in shown.output
        assert "release night" in shown.output
        for wrong_body, complaint in (
            ({"matchers": 'taem="catalog"'}, "did you mean 'team'"),
            ({"matchers": "team=~("}, "column"),
            ({"matchers": []}, "non-empty list"),
            ({"matchers": 'team="x"', "duration": "-5m"}, "duration"),
            ({"matchers": 'team="x"', "until": "never"}, "unknown keys: until"),
        ):
            answer = await client.post("/api/v1/silences", json=wrong_body, headers=auth)
            assert answer.status_code == 400, wrong_body
            assert complaint in answer.json()["error"], answer.text
        huge = {"matchers": 'team="x"', "comment": "x" * 100_000}
        assert (await client.post("/api/v1/silences", json=huge, headers=auth)).status_code == 413
        path = f"/api/v1/silences/{silence['id']}"
        assert (await client.delete(path)).status_code == 401
        assert (await client.delete(path, headers=auth)).status_code == 200
        assert (await client.delete(path, headers=auth)).status_code == 200  # idempotent
        assert (await client.delete("/api/v1/silences/nope", headers=auth)).status_code == 404
        assert (await client.get("/api/v1/silences")).json() == []
        from_config = await client.delete("/api/v1/silences/config:night", headers=auth)
        assert from_config.status_code == 409


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
"""Without the background-networking flags, Chromium keeps knocking on this closed network."""


def headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


async def test_the_status_page_renders_in_a_real_browser(
    tmp_path: Path, sim: Simulator, slack: SlackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = chromium()
    if browser is None:
        pytest.fail("chromium is not installed: `make system-deps` installs it")
    async with (
        daemon_with_a_failure(tmp_path, sim, slack, monkeypatch, token=None) as (base, _),
        httpx.AsyncClient(timeout=5) as client,
    ):
        page = await client.get(f"{base}/")
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        # Vendor text is escaped, never markup.
        assert EVIL_ERID not in page.text
        assert html_escaped(EVIL_ERID) in page.text
        screenshot = tmp_path / "status.png"
        shoot = (f"--screenshot={screenshot}", "--window-size=1280,1024", f"{base}/")
        dom, shot = await asyncio.gather(
            asyncio.to_thread(headless, browser, tmp_path / "a", "--dump-dom", f"{base}/"),
            asyncio.to_thread(headless, browser, tmp_path / "b", *shoot),
        )
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert shot.returncode == 0, shot.stderr[-2000:]
        rendered = dom.stdout
        for heading in ("Sources", "Alerts", "Silences", "Outbox"):
            assert f">{heading}</h2>" in rendered, heading
        assert "team catalog" in rendered
        assert "<script>alert(1)" not in rendered  # the browser built no element from it
        assert screenshot.stat().st_size > 10_000
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # Every link works: anchors name sections on the page; the others answer.
        hrefs = re.findall(r'href="([^"]+)"', rendered)
        assert "/api/v1/status" in hrefs
        ids = set(re.findall(r'id="([^"]+)"', rendered))
        for href in hrefs:
            if href.startswith("#"):
                assert href[1:] in ids, href
            elif href.startswith(("/", base)):
                answer = await client.get(urljoin(f"{base}/", href))
                assert answer.status_code in (200, 503), href  # /readyz may be 503
        assert json.loads((await client.get(f"{base}/api/v1/status")).text)["alerts"]


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_the_outbox_section_says_what_waits_retries_and_was_given_up() -> None:
    from datetime import timedelta

    from taskwarden.alerts import Alert, Notification, Severity
    from taskwarden.service.status import StatusView, status_html, status_json
    from taskwarden.state.protocol import OutboxEntry

    from .conftest import T0

    n = Notification("chat", "g", (), (Alert("k", "deploys", "dr", Severity.CRITICAL, (), "x"),))
    entries = (
        OutboxEntry(3, "chat", "pending", 0, T0, T0, n),
        OutboxEntry(2, "pd", "pending", 4, T0, T0 + timedelta(minutes=2), n,
                    last_error="PagerDuty answered 429 <b>slow down</b>"),
        OutboxEntry(1, "hook", "dead", 1, T0, T0, None, last_error="410 Gone", done=T0),
    )  # fmt: skip
    view = StatusView(T0, (), {"dr": "ok"}, (), (), entries)
    page = status_html(view)
    assert '<span class="ok">waiting</span>' in page
    assert '<span class="bad">retrying</span>' in page
    assert '<span class="bad">given up</span>' in page
    assert "429 &lt;b&gt;slow down&lt;/b&gt;" in page
    assert "(unreadable)" in page  # a stored message that cannot be read is still listed
    states = [(e["receiver"], e["state"], e["nextAttemptAt"]) for e in status_json(view)["outbox"]]
    assert states == [
        ("chat", "waiting", "2026-03-01T12:00:00.000Z"),
        ("pd", "retrying", "2026-03-01T12:02:00.000Z"),
        ("hook", "given up", None),
    ]
