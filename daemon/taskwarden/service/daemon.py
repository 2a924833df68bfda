"""``taskwarden run``: the scheduler, its lifecycle and its signals, around a `Runtime`.

* One APScheduler 3 ``AsyncIOScheduler`` job per source (interval with jitter,
  ``max_instances=1``, ``coalesce``, a misfire grace of one interval) and one for the
  outbox sender.
* SIGTERM / SIGINT: stop scheduling, let the current cycles finish, flush the outbox, all
  within ``daemon.shutdown_grace`` (a hard bound); exit 0.
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
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from taskwarden.errors import StateError
from taskwarden.logs import Redactor
from taskwarden.runtime import Runtime
from taskwarden.service import systemd
from taskwarden.service.heartbeat import heartbeat
from taskwarden.service.jobs import claim_leases, deliver, poll_source
from taskwarden.service.probes import serve_probes
from taskwarden.service.status import gather
from taskwarden.service.watch import config_files, fingerprint
from taskwarden.timeutil import utc_now
from taskwarden.wiring import new_silence

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from datetime import timedelta

    from taskwarden.config import LoadedConfig, Settings
    from taskwarden.delivery import Notifier
    from taskwarden.matchers import Matcher
    from taskwarden.routing import Silence
    from taskwarden.service.status import StatusView

log = structlog.get_logger(__name__)

EXIT_STATE_CORRUPT = 3
"""The state file was found damaged while running and moved aside: restart me."""


class Daemon:
    def __init__(
        self,
        load: Callable[[], LoadedConfig],
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] = utc_now,
        extra_notifiers: Mapping[str, Notifier] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self._load = load
        self._redactor = redactor if redactor is not None else Redactor()
        self._clock = clock
        self._extra_notifiers = dict(extra_notifiers or {})
        self._handle_signals = handle_signals
        self._stop = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        self._reloads: set[asyncio.Task[bool]] = set()
        self.runtime: Runtime | None = None
        self.health_url: str | None = None
        self._config_seen: str | None = None
        """The configuration files' fingerprint when they were last read."""
        self.ready = asyncio.Event()
        """Set once the jobs are scheduled and the health endpoint listens."""

    # --- what probes read -------------------------------------------------------------------

    def alive(self) -> bool:
        return self._scheduler is not None and self._scheduler.running

    def readiness(self) -> dict[str, str]:
        return self.runtime.readiness() if self.runtime is not None else {}

    # --- what the status page and the API read and write ---------------------------------------

    def _running(self) -> Runtime:
        if self.runtime is None:
            raise StateError("the daemon is not running")
        return self.runtime

    def status(self) -> StatusView:
        runtime = self._running()
        return gather(runtime.store, self.readiness(), runtime.clock())

    def api_token(self) -> str | None:
        token = self.runtime.settings.daemon.api_token if self.runtime is not None else None
        return token.get_secret_value() if token is not None else None

    def add_silence(
        self, matchers: tuple[Matcher, ...], duration: timedelta, comment: str, author: str
    ) -> Silence:
        runtime = self._running()
        now = runtime.clock()
        added = new_silence(
            runtime.settings,
            runtime.alerting.teams,
            matchers,
            starts_at=now,
            ends_at=now + duration,
            comment=comment,
            author=author,
        )
        runtime.store.add_silence(added)
        log.info("silence.added", silence=added.silence_id, by=author, via="api")
        return added

    def expire_silence(self, silence_id: str) -> bool:
        runtime = self._running()
        expired = runtime.store.expire_silence(silence_id, runtime.clock())
        if expired:
            log.info("silence.expired", silence=silence_id, via="api")
        return expired

    # --- lifecycle --------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        loaded = self._load()
        for warning in loaded.warnings:
            log.warning("config.warning", warning=warning)
        runtime = Runtime(
            loaded,
            redactor=self._redactor,
            clock=self._clock,
            extra_notifiers=self._extra_notifiers,
            on_fatal=lambda _exc: self._stop.set(),
        )
        async with runtime:
            self.runtime = runtime
            self._config_seen = self._config_fingerprint(runtime)
            runtime.metrics.config_loaded(accepted=True, at=runtime.clock())
            settings = runtime.settings
            bind = settings.daemon.health_bind
            async with serve_probes(self, runtime.metrics, bind, operated=self) as url:
                self.health_url = url
                self._scheduler = AsyncIOScheduler(timezone=UTC)
                self._schedule_all(runtime)
                self._scheduler.start()
                if self._handle_signals:
                    self._install_signals()
                watchdog = asyncio.create_task(self._watchdog())
                systemd.notify("READY=1")
                log.info(
                    "daemon.started",
                    sources=sorted(runtime.sources),
                    receivers=sorted(runtime.wiring.receivers),
                    health=self.health_url,
                )
                self.ready.set()
                await self._stop.wait()
                watchdog.cancel()
                await self._shutdown(runtime, runtime.settings)
        return EXIT_STATE_CORRUPT if runtime.fatal_error is not None else 0

    def _schedule_all(self, runtime: Runtime) -> None:
        assert self._scheduler is not None
        settings = runtime.settings
        wanted = {f"poll:{name}" for name in runtime.sources}
        for job in self._scheduler.get_jobs():
            if job.id.startswith("poll:") and job.id not in wanted:
                job.remove()
        now = datetime.now(UTC)
        for name, configured in runtime.sources.items():
            self._scheduler.add_job(
                poll_source,
                "interval",
                seconds=configured.interval,
                jitter=configured.interval * settings.daemon.jitter,
                args=[runtime, name],
                id=f"poll:{name}",
                name=f"poll {name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(int(configured.interval), 1),
                next_run_time=now,
                replace_existing=True,
            )
        heartbeat_every = settings.heartbeat.interval if settings.heartbeat else None
        self._every(heartbeat_every, heartbeat, runtime, "heartbeat", "heartbeat")
        self._every(runtime.leases.ttl / 3, claim_leases, runtime, "leases", "claim leases")
        watch = settings.daemon.watch_config
        self._every(watch, self._watch_config, runtime, "watch-config", "watch the config files")
        every = settings.daemon.deliver_interval
        self._every(every, deliver, runtime, "deliver", "deliver outbox", first=now)

    def _every(
        self,
        interval: timedelta | None,
        job: Callable[[Runtime], Awaitable[object]],
        runtime: Runtime,
        job_id: str,
        name: str,
        *,
        first: datetime | None = None,
    ) -> None:
        """(Re)schedule one of the daemon's own periodic jobs; None: it is not wanted."""
        assert self._scheduler is not None
        if interval is None:
            if self._scheduler.get_job(job_id) is not None:
                self._scheduler.remove_job(job_id)
            return
        extra = {"next_run_time": first} if first is not None else {}
        self._scheduler.add_job(
            job,
            "interval",
            seconds=interval.total_seconds(),
            args=[runtime],
            id=job_id,
            name=name,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
            **extra,
        )

    def _config_fingerprint(self, runtime: Runtime) -> str | None:
        path = runtime.wiring.loaded.path
        if path is None:
            return None
        return fingerprint(config_files(path, runtime.settings.teams))

    async def _watch_config(self, runtime: Runtime) -> None:
        """Reload when the configuration's files changed since they were last read."""
        seen = await asyncio.to_thread(self._config_fingerprint, runtime)
        if seen is None or seen == self._config_seen:
            return
        log.info("config.changed", action="reloading")
        await self.reload()

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
        runtime = self.runtime
        assert runtime is not None
        # What is read now, accepted or not: a rejected edit is not retried until it changes.
        self._config_seen = await asyncio.to_thread(self._config_fingerprint, runtime)
        try:
            loaded = self._load()
            runtime.reload(loaded)
        except Exception as exc:  # noqa: BLE001 - any invalid configuration is rejected
            runtime.metrics.config_loaded(accepted=False, at=runtime.clock())
            log.error(  # noqa: TRY400 - the message is the diagnosis; no traceback needed
                "config.reload_rejected",
                errors=str(exc) or type(exc).__name__,
                keeping="the running configuration",
            )
            return False
        runtime.metrics.config_loaded(accepted=True, at=runtime.clock())
        for warning in loaded.warnings:
            log.warning("config.warning", warning=warning)
        self._schedule_all(runtime)
        log.info(
            "config.reloaded",
            sources=sorted(runtime.sources),
            receivers=sorted(runtime.wiring.receivers),
        )
        return True

    async def _shutdown(self, runtime: Runtime, settings: Settings) -> None:
        """Finish the current cycles and flush the outbox, all within the grace: a hard
        bound, whatever a server or a notifier does meanwhile. What could not be sent
        stays in the outbox for the next start (a send cut off after the receiver accepted
        it may be repeated once then, never lost)."""
        grace = settings.daemon.shutdown_grace.total_seconds()
        deadline = time.monotonic() + grace
        runtime.stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        systemd.notify("STOPPING=1")
        in_flight = list(runtime.in_flight)
        if in_flight:
            log.info("daemon.finishing_cycles", cycles=len(in_flight))
            await _finish(in_flight, within=deadline - time.monotonic() - 1.0)
        drained = False
        if runtime.fatal_error is None:
            drained = await runtime.sender.drain(within=deadline - time.monotonic() - 0.5)
        await _finish(list(runtime.delivering), within=0.0)
        depth = -1
        if runtime.fatal_error is None:
            with contextlib.suppress(StateError):
                depth, _ = runtime.store.outbox_depth()
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
