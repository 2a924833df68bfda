"""The scheduler's job bodies: plain async functions of a `Runtime`, testable without
APScheduler (which only decides *when* they run).

Every run ends as done or as a failure that is logged, counted, shown on ``/readyz`` and
alerted, whatever the exception:

* a failed poll (vendor error, deadline, a bug) is recorded by `poll_or_report` and
  raises the source-health alert;
* the state refusing writes (disk full) pauses polling (nothing could be committed) and is
  the daemon's own trouble, told to the fallback receivers directly; damage found in the
  state stops the daemon after moving the file aside (`Runtime.fatal`);
* anything else escaping a job is trouble too, never a log line alone.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from taskwarden.errors import StateError
from taskwarden.poller import PollFailed, poll_or_report
from taskwarden.service.memory import release_after

if TYPE_CHECKING:
    from taskwarden.runtime import Runtime

log = structlog.get_logger(__name__)


async def poll_source(rt: Runtime, name: str) -> None:
    """One cycle of one source; never raises (see the module docstring)."""
    configured = rt.sources.get(name)
    if configured is None or rt.stopping:
        return
    task = asyncio.current_task()
    if task is not None:
        rt.in_flight.add(task)
    metrics = rt.metrics
    started = time.perf_counter()
    try:
        if not rt.state_writable():
            metrics.polls.labels(name, "skipped").inc()
            rt.last_failure[name] = "skipped: the state cannot be written"
            log.warning("poll.skipped", source=name, reason="the state cannot be written")
            return
        result = await poll_or_report(
            configured.source, rt.store, configured.poll, rt.clock, alerting=rt.alerting
        )
    except StateError as exc:
        metrics.polls.labels(name, "failed").inc()
        rt.last_failure[name] = f"the state could not be written: {exc}"
        rt.state_failed(exc)
        return
    except Exception as exc:  # a bug past poll_or_report's own net: still told
        log.exception("poll.internal_error", source=name)
        metrics.polls.labels(name, "failed").inc()
        rt.last_failure[name] = f"internal error: {type(exc).__name__}: {exc}"
        rt.trouble.failed("polling", exc, rt.clock())
        return
    finally:
        if task is not None:
            rt.in_flight.discard(task)
        metrics.poll_seconds.labels(name).observe(time.perf_counter() - started)
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
