"""The scheduler's job bodies: plain async functions of a `Runtime`, testable without
APScheduler (which only decides *when* they run).

Every run ends as done or as a failure that is logged, counted, shown on ``/readyz`` and
alerted, whatever the exception:

* a failed poll (vendor error, deadline, a bug) is recorded by `poll_or_report` and
  raises the source-health alert;
* the state refusing writes (disk full) pauses polling (nothing could be committed) and is
  the daemon's own trouble, told to the fallback receivers directly; damage found in the
  state stops the daemon after moving the file aside (`Runtime.fatal`);
* anything else escaping a job is trouble too, never a log line alone;
* a cycle whose lease moved on to another replica meanwhile commits nothing and is no
  failure (``poll.fenced``): its new holder polls the source.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from taskwarden.errors import LeaseLostError, StateError
from taskwarden.poller import PollFailed, poll_or_report
from taskwarden.service.memory import release_after

if TYPE_CHECKING:
    from taskwarden.poller import CycleReport
    from taskwarden.runtime import Runtime
    from taskwarden.state.protocol import Lease
    from taskwarden.wiring import ConfiguredSource

log = structlog.get_logger(__name__)


async def poll_source(rt: Runtime, name: str) -> None:
    """One cycle of one source, if this replica holds its lease; never raises (see the
    module docstring)."""
    configured = rt.sources.get(name)
    lease = rt.source_lease(name)
    if configured is None or rt.stopping or lease is None:
        return  # gone, stopping, or another replica polls it (see service/leases.py)
    task = asyncio.current_task()
    if task is not None:
        rt.in_flight.add(task)
    started = time.perf_counter()
    try:
        result = await _cycle(rt, name, configured, lease)
    finally:
        if task is not None:
            rt.in_flight.discard(task)
        rt.metrics.poll_seconds.labels(name).observe(time.perf_counter() - started)
    if isinstance(result, str):
        rt.metrics.polls.labels(name, result).inc()
        return
    metrics = rt.metrics
    if isinstance(result, PollFailed):
        metrics.polls.labels(name, "failed").inc()
        rt.last_failure[name] = result.message
        return
    release_after(len(result.events))
    metrics.polls.labels(name, "ok").inc()
    metrics.alerts.labels(name, "fired").inc(result.alerts_fired)
    metrics.alerts.labels(name, "resolved").inc(result.alerts_resolved)
    for reason, count in result.rejected.items():
        metrics.records_rejected.labels(name, reason).inc(count)
    rt.last_success[name] = rt.clock()
    rt.last_failure.pop(name, None)
    rt.trouble.ok("polling", rt.clock())


async def _cycle(
    rt: Runtime, name: str, configured: ConfiguredSource, lease: Lease
) -> CycleReport | PollFailed | str:
    """The cycle's report or recorded failure; or the outcome of a cycle that did not run
    or could not be recorded (``skipped``, ``fenced``, ``failed``), already told."""
    try:
        if not rt.state_writable():
            rt.last_failure[name] = "skipped: the state cannot be written"
            log.warning("poll.skipped", source=name, reason="the state cannot be written")
            return "skipped"
        return await poll_or_report(
            configured.source,
            rt.store,
            configured.poll,
            rt.clock,
            alerting=rt.alerting,
            lease=lease,
        )
    except LeaseLostError as exc:
        log.warning("poll.fenced", source=name, reason=str(exc))
        return "fenced"
    except StateError as exc:
        rt.last_failure[name] = f"the state could not be written: {exc}"
        rt.state_failed(exc)
        return "failed"
    except Exception as exc:  # a bug past poll_or_report's own net: still told
        log.exception("poll.internal_error", source=name)
        rt.last_failure[name] = f"internal error: {type(exc).__name__}: {exc}"
        rt.trouble.failed("polling", exc, rt.clock())
        return "failed"


async def claim_leases(rt: Runtime) -> None:
    """Renew and rebalance this replica's leases (see service/leases.py); never raises."""
    if not rt.stopping:
        rt.claim_leases()


async def deliver(rt: Runtime) -> None:
    """Flush due groups, send what the outbox holds, tell the daemon's own trouble;
    never raises (see the module docstring)."""
    task = asyncio.current_task()
    if task is not None:
        rt.delivering.add(task)
        task.add_done_callback(rt.delivering.discard)
    try:
        rt.state_writable()
        await rt.sender.deliver_due()
    except StateError as exc:
        rt.state_failed(exc)
    except Exception as exc:
        log.exception("delivery.round_failed")
        rt.trouble.failed("delivery", exc, rt.clock())
    else:
        rt.trouble.ok("delivery", rt.clock())
    try:
        await rt.trouble.tell()
    except Exception:  # telling is best effort; the trouble stays on /readyz
        log.exception("daemon.trouble_notice_crashed")
