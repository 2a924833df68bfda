"""The dead man's switch: ping an outside service while taskwarden is healthy.

Nothing inside a process can report that the process is gone. Alertmanager users keep an
always-firing Watchdog alert for this; taskwarden pings ``heartbeat.url`` every
``heartbeat.interval`` while every source has polled successfully within its readiness
window (or is polled by another live replica) and the daemon has no trouble of its own
(exactly when ``/readyz`` says ready): with several replicas, each pings while the whole
set is alerting.
When pings stop — the process crashed, hung, lost its host or its network, or polling has
been failing — the outside service (healthchecks.io, Dead Man's Snitch, Cronitor) pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import structlog

from taskwarden.runtime import is_ok

if TYPE_CHECKING:
    from taskwarden.runtime import Runtime

log = structlog.get_logger(__name__)


async def heartbeat(rt: Runtime) -> None:
    """One ping if healthy; never raises (a failed ping is logged and counted: the
    outside service notices the silence)."""
    settings = rt.settings.heartbeat
    if settings is None or rt.http is None:
        return
    unhealthy = {k: v for k, v in rt.readiness().items() if not is_ok(v)}
    if unhealthy:
        rt.metrics.heartbeats.labels("withheld").inc()
        log.warning("heartbeat.withheld", because=unhealthy)
        return
    try:
        response = await rt.http.request(
            settings.method,
            settings.url.get_secret_value(),
            timeout=settings.timeout.total_seconds(),
        )
    except httpx.HTTPError as exc:
        rt.metrics.heartbeats.labels("failed").inc()
        log.warning("heartbeat.failed", error=f"{type(exc).__name__}: {exc}")
        return
    if response.is_success:
        rt.metrics.heartbeats.labels("sent").inc()
        log.debug("heartbeat.sent", status=response.status_code)
    else:
        rt.metrics.heartbeats.labels("failed").inc()
        log.warning("heartbeat.failed", status=response.status_code)
