"""Shared fixtures: a live simulator on loopback and a client pointed at it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from taskwarden.logs import configure_logging
from taskwarden.simulator import Simulator, running_simulator
from taskwarden.sources.digitalriver import DigitalRiverClient, make_auth
from taskwarden.sources.http import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DATA = Path(__file__).parent / "data"
API_KEY = "sk_test_0123456789abcdef"
FAST_RETRY = RetryPolicy(attempts=4, total_timeout=10.0, wait_initial=0.01, wait_max=0.05)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _logging() -> None:
    configure_logging(json_output=True, level="debug")


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(api_key=API_KEY)
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
    )
