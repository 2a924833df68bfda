"""The one place that builds taskwarden from its settings.

`wire` turns settings into the parts a poll and a delivery need (rules and routes, sources,
receivers), validating them as a whole: a reload either swaps in a complete new wiring or
changes nothing. `Runtime` adds what lives across reloads — the state store, the HTTP
client, the outbox sender, the metrics, the daemon's own trouble — as one async context:
``once``, ``run``, ``demo`` and the tests all open it the same way.
"""

from __future__ import annotations

import contextlib
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Self

import structlog

from taskwarden.errors import StateCorruptError, StateError
from taskwarden.outbox import OutboxSender, Receiver
from taskwarden.service.leases import (
    OUTBOX_ORPHANS,
    HeldReceivers,
    Leases,
    receiver_lease,
    replica_name,
    source_lease,
)
from taskwarden.service.metrics import Metrics
from taskwarden.service.trouble import Trouble
from taskwarden.timeutil import utc_now
from taskwarden.wiring import (
    build_alerting,
    build_receivers,
    build_sources,
    configured_silences,
    delivery_settings,
    open_configured_state,
    open_http,
    settings_secrets,
)

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Mapping
    from datetime import datetime
    from types import TracebackType

    import httpx

    from taskwarden.alerting import Alerting
    from taskwarden.config import LoadedConfig, Settings
    from taskwarden.delivery import Notifier
    from taskwarden.logs import Redactor
    from taskwarden.outbox import DeliveryReport, DeliverySettings
    from taskwarden.sources.http import CallMeter
    from taskwarden.state.protocol import Lease, StateStore
    from taskwarden.wiring import ConfiguredSource

log = structlog.get_logger(__name__)


def is_ok(readiness: str) -> bool:
    """A readiness value that counts as ready: ``ok``, or ``ok (…)`` with why (another
    replica polls the source, its lease is changing hands)."""
    return readiness == "ok" or readiness.startswith("ok (")


@dataclass(frozen=True, slots=True)
class Wiring:
    """What one configuration builds; replaced as a whole on reload."""

    loaded: LoadedConfig
    alerting: Alerting
    sources: Mapping[str, ConfiguredSource]
    receivers: Mapping[str, Receiver]
    delivery: DeliverySettings

    @property
    def settings(self) -> Settings:
        return self.loaded.settings


def wire(
    loaded: LoadedConfig,
    http: httpx.AsyncClient,
    *,
    meter: CallMeter | None = None,
    extra_notifiers: Mapping[str, Notifier] | None = None,
) -> Wiring:
    """Build (and so validate) everything a configuration describes; raises `ConfigError`."""
    settings = loaded.settings
    alerting = build_alerting(settings, loaded.path)
    receivers = {
        **build_receivers(settings),
        **{name: Receiver(n) for name, n in (extra_notifiers or {}).items()},
    }
    sources = {c.source.name: c for c in build_sources(settings, http, meter)}
    return Wiring(loaded, alerting, sources, receivers, delivery_settings(settings))


class Runtime:
    """The running parts, built from settings; `reload` swaps the wiring in one step.

    Also what the scheduled jobs share (per source: the last success and failure; the
    cycles and delivery rounds in flight) and what probes and scrapers read.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        redactor: Redactor,
        clock: Callable[[], datetime] = utc_now,
        extra_notifiers: Mapping[str, Notifier] | None = None,
        on_fatal: Callable[[BaseException], None] | None = None,
        snapshot: bool = False,
        share_leases: bool = True,
    ) -> None:
        """``snapshot``: work on an in-memory copy of the state (dry runs): no lock is
        taken and nothing reaches the file (on PostgreSQL: every write is discarded).
        ``share_leases`` False (a one-off run): take every lease no replica holds, not a
        share of them."""
        self._share_leases = share_leases
        self._loaded = loaded
        self._snapshot = snapshot
        self.redactor = redactor
        self.clock = clock
        self._extra_notifiers = dict(extra_notifiers or {})
        self._on_fatal = on_fatal
        self._stack = AsyncExitStack()
        self.metrics = Metrics(self)
        self.trouble = Trouble(count=lambda name: self.metrics.trouble.labels(name).inc())
        self.fatal_error: BaseException | None = None
        self.last_success: dict[str, datetime] = {}
        self.last_failure: dict[str, str] = {}
        """Per source, why its last poll failed (cleared by a success): shown on /readyz."""
        self.in_flight: set[asyncio.Task[None]] = set()
        """Poll cycles running now (a stop lets them finish, within the grace)."""
        self.delivering: set[asyncio.Task[None]] = set()
        """Delivery rounds running now (a stop cancels what outlives the grace)."""
        self.stopping = False
        self._wiring: Wiring | None = None
        self._store: StateStore | None = None
        self._leases: Leases | None = None
        self._sender: OutboxSender | None = None
        self.http: httpx.AsyncClient | None = None

    # --- opening and closing --------------------------------------------------------------

    async def __aenter__(self) -> Self:
        settings = self._loaded.settings
        self.redactor.use(settings_secrets(settings))
        try:
            self.http = await open_http(self._stack)
            self._wiring = wire(
                self._loaded, self.http, meter=self.metrics, extra_notifiers=self._extra_notifiers
            )
            self._store = self._stack.enter_context(
                open_configured_state(
                    settings, now=self.clock(), redactor=self.redactor, snapshot=self._snapshot
                )
            )
            self._store.sync_config_silences(configured_silences(settings, self.clock()))
        except BaseException:
            await self._stack.aclose()
            raise
        self._leases = Leases(
            self._store,
            replica_name(settings.state.replica),
            settings.state.lease_ttl,
            clock=self.clock,
        )
        if not self._snapshot:
            self.claim_leases()
        self._sender = OutboxSender(
            self._store,
            self._wiring.receivers,
            self._wiring.delivery,
            clock=self.clock,
            on_state_error=self.state_failed,
            redact=self.redactor.deep,
            deliver_to=lambda: HeldReceivers(self.leases, self.wiring.receivers),
        )
        self.trouble.configure(
            self._wiring.receivers,
            settings.notifications.fallbacks,
            self._wiring.delivery.health,
            redact=self.redactor.deep,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._leases is not None and not self._snapshot and self.fatal_error is None:
                self._leases.release_all()
        except StateError as failure:
            log.warning("leases.release_failed", error=str(failure), consequence="they expire")
        finally:
            await self._stack.aclose()

    # --- what the jobs use ------------------------------------------------------------------

    @property
    def wiring(self) -> Wiring:
        assert self._wiring is not None, "the runtime is not open"
        return self._wiring

    @property
    def settings(self) -> Settings:
        return self.wiring.settings

    @property
    def store(self) -> StateStore:
        assert self._store is not None, "the runtime is not open"
        return self._store

    @property
    def leases(self) -> Leases:
        assert self._leases is not None, "the runtime is not open"
        return self._leases

    @property
    def sender(self) -> OutboxSender:
        assert self._sender is not None, "the runtime is not open"
        return self._sender

    @property
    def sources(self) -> Mapping[str, ConfiguredSource]:
        return self.wiring.sources

    @property
    def alerting(self) -> Alerting:
        return self.wiring.alerting

    def reload(self, loaded: LoadedConfig) -> Wiring:
        """Build the new configuration; swap it in only if all of it is valid (raises
        otherwise, changing nothing). The state store and the leases stay: a new path, URL
        or lease TTL needs a restart."""
        assert self.http is not None
        new = wire(loaded, self.http, meter=self.metrics, extra_notifiers=self._extra_notifiers)
        new_state, state = loaded.settings.state, self.settings.state
        if (new_state.path, new_state.url, new_state.lease_ttl) != (
            state.path,
            state.url,
            state.lease_ttl,
        ):
            log.warning(
                "config.reload_partial",
                reason="changes to state.path, state.url and state.lease_ttl need a restart",
                keeping=str(state.url or state.path),
            )
        self.redactor.use(settings_secrets(loaded.settings))
        self._loaded = loaded
        self._wiring = new
        self.sender.replace_receivers(new.receivers, new.delivery)
        self.trouble.configure(
            new.receivers,
            loaded.settings.notifications.fallbacks,
            new.delivery.health,
            redact=self.redactor.deep,
        )
        try:
            self.store.sync_config_silences(configured_silences(loaded.settings, self.clock()))
        except StateError as exc:
            self.state_failed(exc)
        return new

    # --- leases: which replica polls what -------------------------------------------------

    def lease_names(self) -> list[str]:
        return [
            *(source_lease(name) for name in self.sources),
            *(receiver_lease(name) for name in self.wiring.receivers),
            OUTBOX_ORPHANS,
        ]

    def claim_leases(self) -> None:
        """Renew and rebalance this replica's leases; never raises. While the shared state
        cannot be reached, the leases lapse (`Leases.held`) and polling and delivery stop;
        on SQLite (one process by its lock) they stay, and the state's own trouble tells."""
        try:
            self.leases.claim(self.lease_names(), share=self._share_leases)
        except StateError as exc:
            if self.leases.exclusive and not isinstance(exc, StateCorruptError):
                log.warning("leases.claim_failed", error=str(exc), consequence="none: one process")
                return
            self.trouble.failed("leases", exc, self.clock())
            self.state_failed(exc)
        except Exception as exc:  # a bug: still told, the leases lapse in time
            log.exception("leases.claim_crashed")
            self.trouble.failed("leases", exc, self.clock())
        else:
            self.trouble.ok("leases", self.clock())

    def source_lease(self, name: str) -> Lease | None:
        """The lease to poll ``name`` under, if this replica may (dry runs need none)."""
        return self.leases.held(source_lease(name))

    # --- the daemon's own failures ----------------------------------------------------------

    def state_failed(self, exc: StateError) -> None:
        """The state refused a read or write: damage is fatal (the file is moved aside,
        then the process stops, to restart fresh), the rest is trouble until it passes."""
        if isinstance(exc, StateCorruptError):
            self.fatal(exc)
        else:
            self.trouble.failed("state", exc, self.clock())

    def state_writable(self) -> bool:
        """While the state is in trouble, probe it; True once it takes writes again."""
        if "state" not in self.trouble.active():
            return True
        try:
            self.store.probe_write()
        except StateError as exc:
            self.state_failed(exc)
            return False
        self.trouble.ok("state", self.clock())
        return True

    def fatal(self, exc: BaseException) -> None:
        if self.fatal_error is not None:
            return
        self.fatal_error = exc
        self.stopping = True
        log.critical(
            "daemon.state_corrupt",
            error=str(exc),
            consequence="the state file is moved aside; restart into a fresh state",
        )
        quarantine = getattr(self._store, "quarantine", None)
        if quarantine is not None:
            with contextlib.suppress(OSError):
                quarantine(self.clock(), str(exc))
        if self._on_fatal is not None:
            self._on_fatal(exc)

    # --- what probes and scrapers read ------------------------------------------------------

    def readiness(self) -> dict[str, str]:
        """Per source, and per trouble of the daemon itself: ``ok`` or what is wrong."""
        if self._wiring is None:
            return {}
        now = self.clock()
        factor = self.settings.daemon.readiness_factor
        out: dict[str, str] = {}
        for name, configured in self.sources.items():
            elsewhere = self._polled_elsewhere(name, now)
            if elsewhere is not None:
                out[name] = elsewhere
                continue
            last = self.last_success.get(name)
            limit = timedelta(seconds=configured.interval * factor)
            failure = self.last_failure.get(name)
            why = f"; last failure: {failure}" if failure else ""
            if last is None:
                out[name] = f"no successful poll yet{why}"
            elif now - last > limit:
                out[name] = f"last successful poll {int((now - last).total_seconds())}s ago{why}"
            else:
                out[name] = "ok"
        for condition in self.trouble.active().values():
            since = int((now - condition.since).total_seconds())
            out[f"daemon:{condition.name}"] = f"failing for {since}s: {condition.error}"
        return {k: self.redactor(v) for k, v in out.items()}

    def _polled_elsewhere(self, name: str, now: datetime) -> str | None:
        """For a source this replica does not poll: who does (None: this replica)."""
        leases = self._leases
        if leases is None or leases.held(source_lease(name)) is not None:
            return None
        if not leases.usable():
            return "not polled here: the leases cannot be renewed (state unreachable)"
        holder = leases.holder_of(source_lease(name))
        if holder is not None and holder.owner and holder.expires > now:
            return f"ok (polled by replica {holder.owner})"
        if holder is not None and now - holder.expires < 2 * leases.ttl:
            return "ok (changing hands: taken at the next claim)"
        return "not polled: no replica has held its lease for two lease TTLs"

    def delivery_totals(self) -> DeliveryReport:
        return self.sender.totals

    def outbox(self) -> tuple[int, float | None]:
        depth, oldest = self.store.outbox_depth()
        age = (self.clock() - oldest).total_seconds() if oldest is not None else None
        return depth, age

    def task_counts(self) -> Mapping[tuple[str, str], int]:
        return self.store.task_counts()

    def last_successes(self) -> Mapping[str, datetime]:
        return dict(self.last_success)

    def leases_held(self) -> Mapping[str, bool]:
        if self._leases is None or self._wiring is None:
            return {}
        return {name: self._leases.held(name) is not None for name in self.lease_names()}
