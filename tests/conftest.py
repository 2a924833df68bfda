"""Shared fixtures: a live simulator on loopback and a client pointed at it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from taskwarden.logs import configure_logging
from taskwarden.simulator import Simulator, running_simulator
from taskwarden.simulator.elasticpath import ElasticPathJobs, install_elasticpath
from taskwarden.simulator.slack import SlackServer, running_slack
from taskwarden.sources.digitalriver import DigitalRiverClient, make_auth
from taskwarden.sources.elasticpath import ElasticPathClient
from taskwarden.sources.http import ResponseLimits, RetryPolicy
from taskwarden.state import SqliteStateStore, open_state

from .pgserver import PgServer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

DATA = Path(__file__).parent / "data"
API_KEY = "sk_test_0123456789abcdef"
FAST_RETRY = RetryPolicy(attempts=4, total_timeout=10.0, wait_initial=0.01, wait_max=0.05)
QUICK_LIMITS = ResponseLimits(attempt_timeout=2.0)
"""A slow answer (the simulator's ``slow`` fault) times out within a test's patience."""
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EP_CLIENT_ID = "ep-client-7f3a"
EP_CLIENT_SECRET = "ep-secret-0123456789"


@pytest.fixture(autouse=True)
def _logging() -> None:
    configure_logging(json_output=True, level="debug")


@pytest.fixture
def _unstarted() -> tuple[Simulator, ElasticPathJobs]:
    simulator = Simulator(api_key=API_KEY)
    jobs = install_elasticpath(simulator, client_id=EP_CLIENT_ID, client_secret=EP_CLIENT_SECRET)
    return simulator, jobs


@pytest.fixture
def ep_jobs(_unstarted: tuple[Simulator, ElasticPathJobs]) -> ElasticPathJobs:
    """The simulator's Elastic Path side (served by the same `sim`)."""
    return _unstarted[1]


@pytest.fixture
async def sim(_unstarted: tuple[Simulator, ElasticPathJobs]) -> AsyncIterator[Simulator]:
    simulator = _unstarted[0]
    simulator.freeze_clock(T0)
    async with running_simulator(simulator) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(2.0)) as client:
        yield client


@pytest.fixture
def dr_client(sim: Simulator, http: httpx.AsyncClient) -> DigitalRiverClient:
    return DigitalRiverClient(
        http,
        base_url=sim.base_url,
        auth=make_auth("basic", API_KEY),
        source_name="dr",
        retry=FAST_RETRY,
        limits=QUICK_LIMITS,
    )


@pytest.fixture
def ep_client(sim: Simulator, http: httpx.AsyncClient) -> ElasticPathClient:
    return ElasticPathClient(
        http,
        base_url=sim.base_url,
        client_id=EP_CLIENT_ID,
        client_secret=EP_CLIENT_SECRET,
        source_name="ep",
        retry=FAST_RETRY,
        limits=QUICK_LIMITS,
    )


@pytest.fixture
def store(tmp_path: Path, sim: Simulator) -> Iterator[SqliteStateStore]:
    state = open_state(tmp_path / "state.db", now=sim.now())
    yield state
    state.close()


@pytest.fixture
async def slack() -> AsyncIterator[SlackServer]:
    """A Slack-compatible endpoint on loopback, channels ``alerts`` and ``ops``, no rate limit."""
    async with running_slack(SlackServer(min_interval=None, channels=("alerts", "ops"))) as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the session (Debian's binaries, `make test` installs them);
    each test takes a fresh database from it."""
    server = PgServer().start()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.new_database()
