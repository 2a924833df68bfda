"""Which replica polls which source and delivers which receiver's outbox.

Every replica claims, every third of ``state.lease_ttl``, the leases it is preferred for
among the live replicas (rendezvous hashing: a replica joining or leaving moves only its
share), renews them, and releases the ones another live replica is now preferred for.
A dead replica's leases expire after one TTL and are taken at the next claim of the
replica now preferred: within 2 × TTL.

Safety does not rest on clocks: a lease changes hands only with a new epoch, and a cycle's
commit checks its epoch in the same transaction (`LeaseLostError`). What rests on the local
monotonic clock is stopping in time: a replica that cannot renew (PostgreSQL unreachable)
stops polling and delivering once ``SAFE_SHARE`` of the TTL has passed since the claim
that last succeeded began, before another replica can take over; it resumes at the next
claim that works.

On SQLite (one process by the file lock) every lease is this process's at once and stays
so while the file cannot be written: what the outbox holds still goes out.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable
    from datetime import datetime, timedelta

    from taskwarden.state.protocol import Lease, LeaseHolder, LeaseStore

log = structlog.get_logger(__name__)

SAFE_SHARE: Final = 0.75
"""Of the TTL: how long after a claim began its leases are used (the rest covers clock
skew between replicas and a claim that takes long)."""
OUTBOX_ORPHANS: Final = "outbox:unconfigured"
"""The lease whose holder gives up entries of receivers no longer configured."""


def source_lease(name: str) -> str:
    return f"source:{name}"


def receiver_lease(name: str) -> str:
    return f"receiver:{name}"


def replica_name(configured: str | None = None) -> str:
    """Host, process and a random suffix: a restarted process never takes its old self
    for alive."""
    if configured:
        return f"{configured}:{secrets.token_hex(2)}"
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def _rank(name: str, owner: str) -> bytes:
    return hashlib.blake2b(f"{name}\0{owner}".encode(), digest_size=8).digest()


def preferred(names: Iterable[str], live: Collection[str], me: str) -> list[str]:
    """The names ``me`` is preferred for among ``live`` (rendezvous hashing)."""
    replicas = sorted({*live, me})
    return [n for n in names if max(replicas, key=lambda owner: _rank(n, owner)) == me]


class Leases:
    """This replica's leases, claimed by `claim` and read by the jobs through `held`."""

    def __init__(
        self,
        store: LeaseStore,
        owner: str,
        ttl: timedelta,
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.owner = owner
        self.ttl = ttl
        self._clock = clock
        self._monotonic = monotonic
        self._held: dict[str, Lease] = {}
        self._valid_until = float("-inf")
        self.holders: list[LeaseHolder] = []
        """Every lease and its holder as of the last claim (readiness, `state`)."""

    @property
    def exclusive(self) -> bool:
        return self._store.exclusive

    def claim(self, names: Iterable[str], *, share: bool = True) -> None:
        """Renew, take and release leases (raises `StateError` when the state cannot be
        reached: the leases held stay usable until their safe share of the TTL ends).
        ``share`` False (a one-off run): every free lease, none another replica holds."""
        began = self._monotonic()
        now = self._clock()
        wanted = list(dict.fromkeys(names))
        if share and not self.exclusive:
            live = self._store.live_replicas(now, self.ttl)
            wanted = preferred(wanted, live, self.owner)
        release = sorted(set(self._held) - set(wanted))
        held = self._store.claim(self.owner, wanted, now, self.ttl, release=release)
        gained = sorted(set(held) - set(self._held))
        lost = sorted(set(self._held) - set(held) - set(release))
        self._held = held
        self._valid_until = began + self.ttl.total_seconds() * SAFE_SHARE
        self.holders = self._store.lease_holders()
        if gained or release or lost:
            log.info(
                "leases.changed",
                owner=self.owner,
                gained=gained,
                released=release,
                lost=lost,
                holding=len(held),
            )

    def release_all(self) -> None:
        """On the way out: give every lease back, so that another replica takes over at
        its next claim instead of after the TTL (raises `StateError`)."""
        held, self._held = sorted(self._held), {}
        self._valid_until = float("-inf")
        self._store.claim(self.owner, [], self._clock(), self.ttl, release=held, leaving=True)
        log.info("leases.released", owner=self.owner, released=held)

    def held(self, name: str) -> Lease | None:
        """The lease, if this replica holds it and may still act on it."""
        if not self.exclusive and self._monotonic() >= self._valid_until:
            return None
        return self._held.get(name)

    def usable(self) -> bool:
        """False once the last claim that worked is too old to act on (state unreachable)."""
        return self.exclusive or self._monotonic() < self._valid_until

    def holder_of(self, name: str) -> LeaseHolder | None:
        return next((h for h in self.holders if h.name == name), None)


class HeldReceivers:
    """The receivers whose outbox this replica delivers: the configured ones it holds a
    lease for, and (with the orphans' lease) those no longer configured."""

    def __init__(self, leases: Leases, configured: Collection[str]) -> None:
        self._leases = leases
        self._configured = configured

    def __contains__(self, receiver: object) -> bool:
        if not isinstance(receiver, str):
            return False
        if receiver in self._configured:
            return self._leases.held(receiver_lease(receiver)) is not None
        return self._leases.held(OUTBOX_ORPHANS) is not None
