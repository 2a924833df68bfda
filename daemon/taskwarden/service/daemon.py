"""``taskwarden run``: the scheduler, its lifecycle and its signals.

* One APScheduler 3 ``AsyncIOScheduler`` job per source (interval with jitter,
  ``max_instances=1``, ``coalesce``, a misfire grace of one interval) and one for the
  outbox sender.
* SIGTERM / SIGINT: stop scheduling, let the current cycles finish, flush the outbox, all
  within ``daemon.shutdown_grace``; exit 0.
* SIGHUP: reload the configuration; an invalid one (whatever is wrong with it) is rejected
  with its errors and the running one stays.
* The state file found damaged while running: it is moved aside at once and the daemon
  exits with `EXIT_STATE_CORRUPT` (3); systemd (``Restart=on-failure``) and Kubernetes
  restart it into a fresh state that reports, not baselines.
* systemd: READY=1 once the first jobs are scheduled, WATCHDOG=1 while the scheduler runs,
  STOPPING=1 on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from taskwarden.config import load_settings
from taskwarden.errors import StateError
from taskwarden.outbox import DeliveryReport, OutboxSender, Receiver
from taskwarden.service import systemd
from taskwarden.service.health import serve_health
from taskwarden.service.jobs import JobContext, deliver, poll_source, state_failed
from taskwarden.service.metrics import Metrics
from taskwarden.service.trouble import Trouble
from taskwarden.state import open_state
from taskwarden.timeutil import utc_now
from taskwarden.wiring import (
    build_alerting,
    build_receivers,
    build_sources,
    configured_silences,
    delivery_settings,
    open_http,
    register_settings_secrets,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import httpx

    from taskwarden.config import Settings
    from taskwarden.notify.base import Notifier
    from taskwarden.state import SqliteStateStore

log = structlog.get_logger(__name__)

EXIT_STATE_CORRUPT = 3
"""The state file was found damaged while running and moved aside: restart me."""


class Daemon:
    def __init__(
        self,
        config: Path,
        *,
        clock: Callable[[], datetime] = utc_now,
        extra_notifiers: Mapping[str, Notifier] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self._handle_signals = handle_signals
        self._config = config
        self._clock = clock
        self._extra_notifiers = dict(extra_notifiers or {})
        self._stop = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._ctx: JobContext | None = None
        self._settings: Settings | None = None
        self._http: httpx.AsyncClient | None = None
        self._metrics: Metrics | None = None
        self._fatal: BaseException | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self.health_url: str | None = None
        self.ready = asyncio.Event()
        """Set once the jobs are scheduled and the health endpoint listens."""

    # --- what probes and scrapers read -------------------------------------------------------

    def alive(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def readiness(self) -> dict[str, str]:
        """Per source, and per trouble of the daemon itself: ``ok`` or what is wrong."""
        if self._ctx is None or self._settings is None:
            return {}
        now = self._clock()
        factor = self._settings.daemon.readiness_factor
        out: dict[str, str] = {}
        for name, configured in self._ctx.sources.items():
            last = self._ctx.last_success.get(name)
            limit = timedelta(seconds=configured.interval * factor)
            failure = self._ctx.last_failure.get(name)
            why = f"; last failure: {failure}" if failure else ""
            if last is None:
                out[name] = f"no successful poll yet{why}"
            elif now - last > limit:
                out[name] = f"last successful poll {int((now - last).total_seconds())}s ago{why}"
            else:
                out[name] = "ok"
        for condition in self._ctx.trouble.active().values():
            since = int((now - condition.since).total_seconds())
            out[f"daemon:{condition.name}"] = f"failing for {since}s: {condition.error}"
        return out

    def delivery_totals(self) -> DeliveryReport:
        return self._ctx.sender.totals if self._ctx else DeliveryReport()

    def outbox(self) -> tuple[int, float | None]:
        if self._ctx is None:
            return 0, None
        depth, oldest = self._ctx.store.outbox_depth()
        age = (self._clock() - oldest).total_seconds() if oldest is not None else None
        return depth, age

    def task_counts(self) -> Mapping[tuple[str, str], int]:
        return self._ctx.store.task_counts() if self._ctx else {}

    def last_success(self) -> Mapping[str, datetime]:
        return dict(self._ctx.last_success) if self._ctx else {}

    # --- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        settings = load_settings(self._config)
        register_settings_secrets(settings)
        alerting = build_alerting(settings, self._config)
        self._settings = settings
        async with AsyncExitStack() as stack:
            store = stack.enter_context(open_state(settings.state.path, now=self._clock()))
            self._http = await open_http(stack)
            metrics = Metrics(self)
            self._metrics = metrics
            sources = {c.source.name: c for c in build_sources(settings, self._http, metrics)}
            store.sync_config_silences(configured_silences(settings, self._clock()))
            receivers = self._receivers(settings)
            trouble = Trouble(count=lambda name: metrics.trouble.labels(name).inc())
            trouble.configure(
                receivers, settings.notifications.fallbacks, delivery_settings(settings).health
            )
            sender = OutboxSender(
                store,
                receivers,
                delivery_settings(settings),
                clock=self._clock,
                on_state_error=lambda exc: state_failed(ctx, exc),
            )
            ctx = JobContext(
                store=store,
                sender=sender,
                metrics=metrics,
                sources=sources,
                alerting=alerting,
                clock=self._clock,
                trouble=trouble,
                fatal=self._on_fatal,
            )
            self._ctx = ctx
            self.health_url = await stack.enter_async_context(
                serve_health(self, metrics, settings.daemon.health_bind)
            )
            self._scheduler = AsyncIOScheduler(timezone=UTC)
            self._schedule_all(settings)
            self._scheduler.start()
            if self._handle_signals:
                self._install_signals()
            watchdog = asyncio.create_task(self._watchdog())
            systemd.notify("READY=1")
            log.info(
                "daemon.started",
                sources=sorted(sources),
                receivers=sorted(receivers),
                health=self.health_url,
            )
            self.ready.set()
            await self._stop.wait()
            watchdog.cancel()
            await self._shutdown(store, settings)
        if self._fatal is not None:
            return EXIT_STATE_CORRUPT
        return 0

    def _on_fatal(self, exc: BaseException) -> None:
        """The state is damaged: move it aside now (holding the lock), then stop."""
        if self._fatal is not None:
            return
        self._fatal = exc
        log.critical(
            "daemon.state_corrupt",
            error=str(exc),
            exit_code=EXIT_STATE_CORRUPT,
            consequence="the state file is moved aside; restart into a fresh state",
        )
        if self._ctx is not None:
            self._ctx.stopping = True
            store = self._ctx.store
            quarantine = getattr(store, "quarantine", None)
            if quarantine is not None:
                quarantine(self._clock(), str(exc))
        self._stop.set()

    def _receivers(self, settings: Settings) -> dict[str, Receiver]:
        extra = {name: Receiver(n) for name, n in self._extra_notifiers.items()}
        return {**build_receivers(settings), **extra}

    def _schedule_all(self, settings: Settings) -> None:
        assert self._scheduler is not None
        assert self._ctx is not None
        wanted = {f"poll:{name}" for name in self._ctx.sources}
        for job in self._scheduler.get_jobs():
            if job.id.startswith("poll:") and job.id not in wanted:
                job.remove()
        now = datetime.now(UTC)
        for name, configured in self._ctx.sources.items():
            self._scheduler.add_job(
                poll_source,
                "interval",
                seconds=configured.interval,
                jitter=configured.interval * settings.daemon.jitter,
                args=[self._ctx, name],
                id=f"poll:{name}",
                name=f"poll {name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(int(configured.interval), 1),
                next_run_time=now,
                replace_existing=True,
            )
        self._scheduler.add_job(
            deliver,
            "interval",
            seconds=settings.daemon.deliver_interval.total_seconds(),
            args=[self._ctx],
            id="deliver",
            name="deliver outbox",
            max_instances=1,
            coalesce=True,
            next_run_time=now,
            replace_existing=True,
        )

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

    def _on_reload_signal(self) -> None:
        task = asyncio.ensure_future(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.stop_requested", signal=sig.name)
        self._stop.set()

    async def _watchdog(self) -> None:
        interval = systemd.watchdog_interval()
        if interval is None:
            return
        while True:
            if self.alive():
                systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def reload(self) -> bool:
        """Re-read the configuration; keep the running one if the new one is invalid,
        whatever is wrong with it (a config error, an unreadable file, a bad CA file)."""
        assert self._ctx is not None
        assert self._http is not None
        try:
            settings = load_settings(self._config)
            alerting = build_alerting(settings, self._config)
            receivers = self._receivers(settings)
            sources = {c.source.name: c for c in build_sources(settings, self._http, self._metrics)}
        except Exception as exc:  # noqa: BLE001 - any invalid configuration is rejected
            log.error(  # noqa: TRY400 - the message is the diagnosis; no traceback needed
                "config.reload_rejected",
                errors=str(exc) or type(exc).__name__,
                keeping="the running configuration",
            )
            return False
        if self._settings is not None and settings.state.path != self._settings.state.path:
            log.warning(
                "config.reload_partial",
                reason="state.path changes need a restart",
                keeping=str(self._settings.state.path),
            )
        register_settings_secrets(settings)
        self._ctx.alerting = alerting
        self._ctx.sources = sources
        delivery = delivery_settings(settings)
        self._ctx.sender.replace_receivers(receivers, delivery)
        self._ctx.trouble.configure(receivers, settings.notifications.fallbacks, delivery.health)
        try:
            self._ctx.store.sync_config_silences(configured_silences(settings, self._clock()))
        except StateError as exc:
            state_failed(self._ctx, exc)
        self._settings = settings
        self._schedule_all(settings)
        log.info("config.reloaded", sources=sorted(sources), receivers=sorted(receivers))
        return True

    async def _shutdown(self, store: SqliteStateStore, settings: Settings) -> None:
        """Finish the current cycles and flush the outbox, all within the grace: a hard
        bound, whatever a server or a notifier does meanwhile. What could not be sent
        stays in the outbox for the next start (a send cut off after the receiver accepted
        it may be repeated once then, never lost)."""
        assert self._ctx is not None
        grace = settings.daemon.shutdown_grace.total_seconds()
        deadline = time.monotonic() + grace
        self._ctx.stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        systemd.notify("STOPPING=1")
        in_flight = list(self._ctx.in_flight)
        if in_flight:
            log.info("daemon.finishing_cycles", cycles=len(in_flight))
            await _finish(in_flight, within=deadline - time.monotonic() - 1.0)
        drained = False
        if self._fatal is None:
            drained = await self._ctx.sender.drain(within=deadline - time.monotonic() - 0.5)
        await _finish(list(self._ctx.delivering), within=0.0)
        depth = -1
        if self._fatal is None:
            with contextlib.suppress(StateError):
                depth, _ = store.outbox_depth()
        log.info(
            "daemon.stopped",
            outbox_drained=drained,
            outbox_pending=depth,
            seconds=round(grace - (deadline - time.monotonic()), 2),
        )


async def _finish(tasks: list[asyncio.Task[None]], *, within: float) -> None:
    """Let ``tasks`` end within ``within`` seconds, then cancel them (and wait briefly)."""
    pending = set(tasks)
    if pending and within > 0:
        _, pending = await asyncio.wait(pending, timeout=within)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=0.25)
