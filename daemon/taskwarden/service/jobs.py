"""The scheduler's job bodies: plain async functions of a `JobContext`, testable without
APScheduler (which only decides *when* they run)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from taskwarden.poller import poll_or_report
from taskwarden.service.memory import release_after

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from taskwarden.alerting import Alerting
    from taskwarden.outbox import OutboxSender
    from taskwarden.service.metrics import Metrics
    from taskwarden.state.protocol import StateStore
    from taskwarden.wiring import ConfiguredSource

log = structlog.get_logger(__name__)


@dataclass
class JobContext:
    """What the jobs share; `sources` and `alerting` are replaced on reload."""

    store: StateStore
    sender: OutboxSender
    metrics: Metrics
    sources: dict[str, ConfiguredSource]
    alerting: Alerting
    clock: Callable[[], datetime]
    last_success: dict[str, datetime] = field(default_factory=dict)
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: bool = False


async def poll_source(ctx: JobContext, name: str) -> None:
    """One cycle of one source (never raises: a failure is logged, counted and alerted)."""
    configured = ctx.sources.get(name)
    if configured is None or ctx.stopping:
        return
    task = asyncio.current_task()
    if task is not None:
        ctx.in_flight.add(task)
    started = time.perf_counter()
    try:
        result = await poll_or_report(
            configured.source, ctx.store, configured.poll, ctx.clock(), alerting=ctx.alerting
        )
    except Exception:  # a bug must not stop the schedule; it is logged with its traceback
        log.exception("poll.crashed", source=name)
        ctx.metrics.polls.labels(name, "failed").inc()
        return
    finally:
        if task is not None:
            ctx.in_flight.discard(task)
        ctx.metrics.poll_seconds.labels(name).observe(time.perf_counter() - started)
    if isinstance(result, Exception):
        ctx.metrics.polls.labels(name, "failed").inc()
        return
    release_after(len(result.events))
    ctx.metrics.polls.labels(name, "ok").inc()
    ctx.metrics.alerts.labels(name, "fired").inc(result.alerts_fired)
    ctx.metrics.alerts.labels(name, "resolved").inc(result.alerts_resolved)
    ctx.last_success[name] = ctx.clock()


async def deliver(ctx: JobContext) -> None:
    """Flush due groups and send what the outbox holds (never raises)."""
    try:
        await ctx.sender.deliver_due()
    except Exception:
        log.exception("delivery.crashed")
