"""The scheduler's job bodies: plain async functions of a `JobContext`, testable without
APScheduler (which only decides *when* they run).

Every run ends as done or as a failure that is logged, counted, shown on ``/readyz`` and
alerted, whatever the exception:

* a failed poll (vendor error, deadline, a bug) is recorded by `poll_or_report` and
  raises the source-health alert;
* the state refusing writes (disk full) pauses polling (nothing could be committed) and is
  the daemon's own trouble, told to the fallback receivers directly; damage found in the
  state stops the daemon with `EXIT_STATE_CORRUPT` after moving the file aside;
* anything else escaping a job is trouble too, never a log line alone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from taskwarden.errors import StateCorruptError, StateError
from taskwarden.poller import PollFailed, poll_or_report
from taskwarden.service.memory import release_after

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from taskwarden.alerting import Alerting
    from taskwarden.outbox import OutboxSender
    from taskwarden.service.metrics import Metrics
    from taskwarden.service.trouble import Trouble
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
    trouble: Trouble
    fatal: Callable[[BaseException], None]
    """Stops the daemon: the state file is damaged (it is moved aside first)."""
    last_success: dict[str, datetime] = field(default_factory=dict)
    last_failure: dict[str, str] = field(default_factory=dict)
    """Per source, why its last poll failed (cleared by a success): shown on /readyz."""
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    """Poll cycles running now (a stop lets them finish, within the grace)."""
    delivering: set[asyncio.Task[None]] = field(default_factory=set)
    """Delivery rounds running now (a stop cancels what outlives the grace)."""
    stopping: bool = False


def state_failed(ctx: JobContext, exc: StateError) -> None:
    """The state refused a read or write: damage stops the daemon, the rest is trouble."""
    if isinstance(exc, StateCorruptError):
        ctx.fatal(exc)
    else:
        ctx.trouble.failed("state", exc, ctx.clock())


def state_writable(ctx: JobContext) -> bool:
    """While the state is in trouble, probe it; True once it takes writes again."""
    if "state" not in ctx.trouble.active():
        return True
    try:
        ctx.store.probe_write()
    except StateError as exc:
        state_failed(ctx, exc)
        return False
    ctx.trouble.ok("state", ctx.clock())
    return True


async def poll_source(ctx: JobContext, name: str) -> None:
    """One cycle of one source; never raises (see the module docstring)."""
    configured = ctx.sources.get(name)
    if configured is None or ctx.stopping:
        return
    task = asyncio.current_task()
    if task is not None:
        ctx.in_flight.add(task)
    started = time.perf_counter()
    try:
        if not state_writable(ctx):
            ctx.metrics.polls.labels(name, "skipped").inc()
            ctx.last_failure[name] = "skipped: the state cannot be written"
            log.warning("poll.skipped", source=name, reason="the state cannot be written")
            return
        result = await poll_or_report(
            configured.source, ctx.store, configured.poll, ctx.clock, alerting=ctx.alerting
        )
    except StateError as exc:
        ctx.metrics.polls.labels(name, "failed").inc()
        ctx.last_failure[name] = f"the state could not be written: {exc}"
        state_failed(ctx, exc)
        return
    except Exception as exc:  # a bug past poll_or_report's own net: still told
        log.exception("poll.internal_error", source=name)
        ctx.metrics.polls.labels(name, "failed").inc()
        ctx.last_failure[name] = f"internal error: {type(exc).__name__}: {exc}"
        ctx.trouble.failed("polling", exc, ctx.clock())
        return
    finally:
        if task is not None:
            ctx.in_flight.discard(task)
        ctx.metrics.poll_seconds.labels(name).observe(time.perf_counter() - started)
    if isinstance(result, PollFailed):
        ctx.metrics.polls.labels(name, "failed").inc()
        ctx.last_failure[name] = result.message
        return
    release_after(len(result.events))
    ctx.metrics.polls.labels(name, "ok").inc()
    ctx.metrics.alerts.labels(name, "fired").inc(result.alerts_fired)
    ctx.metrics.alerts.labels(name, "resolved").inc(result.alerts_resolved)
    for reason, count in result.rejected.items():
        ctx.metrics.records_rejected.labels(name, reason).inc(count)
    ctx.last_success[name] = ctx.clock()
    ctx.last_failure.pop(name, None)
    ctx.trouble.ok("polling", ctx.clock())


async def deliver(ctx: JobContext) -> None:
    """Flush due groups, send what the outbox holds, tell the daemon's own trouble;
    never raises (see the module docstring)."""
    task = asyncio.current_task()
    if task is not None:
        ctx.delivering.add(task)
        task.add_done_callback(ctx.delivering.discard)
    try:
        state_writable(ctx)
        await ctx.sender.deliver_due()
    except StateError as exc:
        state_failed(ctx, exc)
    except Exception as exc:
        log.exception("delivery.round_failed")
        ctx.trouble.failed("delivery", exc, ctx.clock())
    else:
        ctx.trouble.ok("delivery", ctx.clock())
    try:
        await ctx.trouble.tell()
    except Exception:  # telling is best effort; the trouble stays on /readyz
        log.exception("daemon.trouble_notice_crashed")
