"""``taskwarden simulate``: the simulator as a standalone server."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

import structlog

from taskwarden.simulator.elasticpath import install_elasticpath
from taskwarden.simulator.server import Simulator, running_simulator

log = structlog.get_logger(__name__)


async def serve_forever(*, host: str, port: int, api_key: str, tasks: int) -> int:
    sim = Simulator(api_key=api_key)
    # Elastic Path side: client id "sim-client-id", secret "sim-client-secret".
    install_elasticpath(sim)
    if tasks:
        now = sim.now()
        sim.generate(tasks, begin=now - timedelta(days=29), end=now)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_simulator(sim, host=host, port=port):
        log.info("simulator.listening", url=sim.base_url, tasks=len(sim.tasks))
        await stop.wait()
    log.info("simulator.stopped")
    return 0
