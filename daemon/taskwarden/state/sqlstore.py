"""What the SQL backends share: every port's queries, written once in the SQL that SQLite and
PostgreSQL both speak, over a narrow DB-API `Connection`.

Statements use ``?`` placeholders and may carry SQLite's ``INDEXED BY`` plan pins; the
PostgreSQL connection translates both (see ``state/postgres.py``). A backend supplies its
transactions (all or nothing, one writer at a time), its error translation and how it opens.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from taskwarden.alerts import decode_alert, decode_notification
from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared, TaskGone, TaskUpdated
from taskwarden.errors import LeaseLostError, StateCorruptError, StateError
from taskwarden.logs import Redactor
from taskwarden.model import OpenTask, Phase, Product, SourceView, Task
from taskwarden.state import alertstore
from taskwarden.state.decoding import decoding
from taskwarden.state.protocol import (
    AlertDelivery,
    AlertRecord,
    CycleCommit,
    Lease,
    LeaseHolder,
    OutboxEntry,
    SourceStatus,
    StateSummary,
)
from taskwarden.timeutil import from_epoch_ms, to_epoch_ms

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Container, Iterable, Iterator, Sequence
    from datetime import datetime, timedelta

    from taskwarden.alerts import Alert, Notification
    from taskwarden.delivery import OutboxItem
    from taskwarden.diff import Event
    from taskwarden.routing import AlertBatch, Silence

Row = Any
"""A result row, readable by position and by column name (``sqlite3.Row`` or its twin)."""


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row: ...

    def fetchall(self) -> list[Row]: ...

    def __iter__(self) -> Iterator[Row]: ...


class Connection(Protocol):
    """The part of DB-API both drivers share, with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor: ...


OPEN_PHASES = (Phase.OPEN.value, Phase.RUNNING.value, Phase.UNKNOWN.value)
TERMINAL_PHASES = tuple(p.value for p in Phase if p.is_terminal)
_IN_CHUNK = 500
"""SQLite caps bound parameters per statement; id lists are sent in chunks."""

_TASK_COLUMNS = "task_id, status, phase, kind, received_ms, finished_ms, products, uri, attributes"
_JOINED_TASK_COLUMNS = ", ".join(f"t.{c.strip()}" for c in _TASK_COLUMNS.split(","))

S = TypeVar("S", bound="SqlStateStore")
P = ParamSpec("P")
R = TypeVar("R")


def guarded(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A store method whose driver errors surface as `StateError`s; text that is not
    UTF-8 (SQLite hands it over as it is stored) is damage."""

    @functools.wraps(method)
    def call(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            self.reconnect_if_lost()
            return method(self, *args, **kwargs)
        except self.driver_errors as exc:
            raise self.translate(exc) from exc
        except UnicodeDecodeError as exc:
            raise StateCorruptError(f"state: a stored text is not UTF-8 ({exc})") from exc

    return call


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_epoch_ms(moment)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else from_epoch_ms(value)


def _task_row(task: Task) -> tuple[Any, ...]:
    products = [[p.product_id, p.external_reference_id, p.product_type] for p in task.products]
    return (
        task.task_id,
        task.status,
        task.phase.value,
        task.kind,
        to_epoch_ms(task.received_time),
        _ms(task.finished_time),
        json.dumps(products, separators=(",", ":")),
        task.uri,
        json.dumps(task.attributes, separators=(",", ":")),
    )


def _task_from_row(source: str, row: Row) -> Task:
    with decoding("task"):
        return Task(
            source=source,
            task_id=row["task_id"],
            status=row["status"],
            phase=Phase(row["phase"]),
            kind=row["kind"],
            received_time=from_epoch_ms(row["received_ms"]),
            finished_time=_dt(row["finished_ms"]),
            products=tuple(Product(*p) for p in json.loads(row["products"])),
            uri=row["uri"],
            attributes=tuple((str(k), str(v)) for k, v in json.loads(row["attributes"])),
        )


@dataclass(frozen=True, slots=True)
class _Claim:
    owner: str | None
    epoch: int
    expires_ms: int


class SqlStateStore:
    """Every port of the state over one `Connection`; a backend subclasses it.

    Every public method raises `StateError`s only: `StateCorruptError` when a row is
    damaged, `StateUnavailableError` when the state cannot be written now, `LeaseLostError`
    when a fenced commit finds its lease taken."""

    driver_errors: tuple[type[Exception], ...] = ()
    schema_version: int = 0
    exclusive = False
    """True when the backend guarantees one process at a time (SQLite's file lock): every
    lease is this process's, whoever held it before."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._redact = redactor if redactor is not None else Redactor()
        """Every error text and payload written passes through it: no secret is stored."""

    # --- what a backend provides ------------------------------------------------------------

    @property
    def db(self) -> Connection:
        raise NotImplementedError

    def transaction(self, *, rollback: bool = False) -> contextlib.AbstractContextManager[Any]:
        """All or nothing, one writer at a time; ``rollback`` discards the work (dry runs)."""
        raise NotImplementedError

    def translate(self, exc: Exception) -> StateError:
        raise NotImplementedError

    def reconnect_if_lost(self) -> None:
        """Before each call: a backend whose connection dropped opens a new one."""

    @property
    def location(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def after_large_commit(self) -> None:
        """A backend may give back what a large commit used (SQLite's WAL)."""

    # --- meta -----------------------------------------------------------------------------

    @guarded
    def probe_write(self) -> None:
        """A tiny durable write: raises while the state cannot be written (disk full)."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_write_probe', '1') "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT)"
            )

    @guarded
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @guarded
    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- reads ------------------------------------------------------------------------------

    @guarded
    def source_view(self, source: str) -> SourceView:
        row = self.db.execute(
            "SELECT checkpoint_ms FROM sources WHERE source = ?", (source,)
        ).fetchone()
        open_rows = self._open_rows(source)
        return SourceView(
            checkpoint=_dt(row["checkpoint_ms"]) if row is not None else None,
            open_tasks=tuple(
                OpenTask(r["task_id"], from_epoch_ms(r["received_ms"])) for r in open_rows
            ),
        )

    def _open_rows(self, source: str) -> list[Row]:
        """Open tasks, oldest first, through the phase index.

        Without statistics SQLite may prefer the primary key (all of the source's rows: a
        scan of the window, 15 ms at 100k tasks) or, with ORDER BY, the received-time index;
        INDEXED BY pins the plan. The open set is small, so it is sorted here."""
        rows = self.db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_phase "  # noqa: S608 - constant column list
            "WHERE source = ? AND phase IN (?, ?, ?)",
            (source, *OPEN_PHASES),
        ).fetchall()
        return sorted(rows, key=lambda r: (r["received_ms"], r["task_id"]))

    @guarded
    def tracked(self, source: str, task_ids: Iterable[str]) -> dict[str, Task]:
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, Task] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE source = ? AND task_id IN ({marks})",  # noqa: S608 - placeholders only
                (source, *chunk),
            )
            for row in rows:
                found[row["task_id"]] = _task_from_row(source, row)
        return found

    @guarded
    def needs_baseline(self, source: str) -> bool:
        """A fresh state's first poll is a baseline; after a corrupt-file recovery it is not,
        because failures may have happened while the old state was unreadable."""
        if self.get_meta("recovered_from") is not None:
            return False
        row = self.db.execute(
            "SELECT checkpoint_ms FROM sources WHERE source = ?", (source,)
        ).fetchone()
        return row is None or row["checkpoint_ms"] is None

    @guarded
    def journal(self, source: str | None = None) -> list[Row]:
        """The transition journal, oldest first (inspection and tests)."""
        if source is None:
            return self.db.execute("SELECT * FROM journal ORDER BY id").fetchall()
        return self.db.execute(
            "SELECT * FROM journal WHERE source = ? ORDER BY id", (source,)
        ).fetchall()

    @guarded
    def summary(self) -> StateSummary:
        sources = []
        for row in self.db.execute("SELECT * FROM sources ORDER BY source").fetchall():
            name = row["source"]
            counts = self.db.execute(
                "SELECT status, COUNT(*) FROM tasks INDEXED BY tasks_by_status "
                "WHERE source = ? GROUP BY status",
                (name,),
            ).fetchall()
            sources.append(
                SourceStatus(
                    source=name,
                    checkpoint=_dt(row["checkpoint_ms"]),
                    last_success=_dt(row["last_success_ms"]),
                    last_strategy=row["last_strategy"],
                    last_api_calls=row["last_api_calls"],
                    tasks_by_status={str(r[0]): int(r[1]) for r in counts},
                    open_tasks=tuple(_task_from_row(name, r) for r in self._open_rows(name)),
                )
            )
        journal_entries = self.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        return StateSummary(
            path=self.location,
            schema_version=self.schema_version,
            sources=tuple(sources),
            journal_entries=int(journal_entries),
            leases=tuple(self._lease_holders()),
        )

    # --- the one write path of a poll -------------------------------------------------------

    @guarded
    def commit_cycle(
        self, source: str, commit: CycleCommit, *, dry_run: bool = False
    ) -> list[Notification]:
        now_ms = to_epoch_ms(commit.now)
        made: list[Notification] = []
        with self.transaction(rollback=dry_run) as db:
            if commit.lease is not None and not dry_run:
                self._check_fence(db, commit.lease)
            self._apply_events(db, source, commit, now_ms)
            db.execute(
                "INSERT INTO sources (source, checkpoint_ms, last_success_ms, last_strategy, "
                "last_api_calls) VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                "checkpoint_ms = CASE WHEN sources.checkpoint_ms > excluded.checkpoint_ms "
                "THEN sources.checkpoint_ms ELSE excluded.checkpoint_ms END, "
                "last_success_ms = excluded.last_success_ms, "
                "last_strategy = excluded.last_strategy, "
                "last_api_calls = excluded.last_api_calls, "
                "failing_since_ms = NULL, last_error = NULL",
                (source, to_epoch_ms(commit.checkpoint), now_ms, commit.strategy, commit.api_calls),
            )
            if commit.alerts:
                alertstore.apply_alerts(db, self._redact.deep(commit.alerts), commit.now)
            if commit.flush:
                made = alertstore.flush(db, commit.now, force=dry_run)
            if commit.prune_before is not None:
                alertstore.prune(db, commit.prune_before)
                cutoff = to_epoch_ms(commit.prune_before)
                db.execute(
                    "DELETE FROM tasks INDEXED BY tasks_by_phase "
                    "WHERE source = ? AND phase IN (?, ?, ?) AND received_ms < ?",
                    (source, *TERMINAL_PHASES, cutoff),
                )
                db.execute(
                    "DELETE FROM journal WHERE source = ? AND observed_ms < ?", (source, cutoff)
                )
        if len(commit.events) >= LARGE_COMMIT and not dry_run:
            self.after_large_commit()
        return made

    @staticmethod
    def _check_fence(db: Connection, lease: Lease) -> None:
        """Inside the cycle's transaction: the lease is still ours, at the epoch the cycle
        began with. A replica that was paused or cut off past its lease commits nothing."""
        row = db.execute("SELECT owner, epoch FROM leases WHERE name = ?", (lease.name,)).fetchone()
        if row is None or row["owner"] != lease.owner or int(row["epoch"]) != lease.epoch:
            holder = "nobody" if row is None or row["owner"] is None else row["owner"]
            epoch = "-" if row is None else row["epoch"]
            raise LeaseLostError(
                f"lease {lease.name} moved on (held by {holder} at epoch {epoch}, this cycle "
                f"began at epoch {lease.epoch}): the cycle is discarded, its holder polls again"
            )

    @staticmethod
    def _apply_events(db: Connection, source: str, commit: CycleCommit, now_ms: int) -> None:
        """Rows are generated, not listed: a first poll over a large window writes ~100k of
        each, and building them all at once would double the cycle's peak memory."""
        baseline = int(commit.baseline)
        db.executemany(
            f"INSERT INTO tasks (source, {_TASK_COLUMNS}, first_seen_ms, last_seen_ms) "  # noqa: S608 - constant column list
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (source, task_id) DO UPDATE SET "
            "status = excluded.status, phase = excluded.phase, kind = excluded.kind, "
            "received_ms = excluded.received_ms, finished_ms = excluded.finished_ms, "
            "products = excluded.products, uri = excluded.uri, attributes = excluded.attributes, "
            "last_seen_ms = excluded.last_seen_ms",
            (
                (source, *_task_row(event.task), now_ms, now_ms)
                for event in commit.events
                if not isinstance(event, TaskGone)
            ),
        )
        db.executemany(
            "DELETE FROM tasks WHERE source = ? AND task_id = ?",
            ((source, e.task.task_id) for e in commit.events if isinstance(e, TaskGone)),
        )
        db.executemany(
            "INSERT INTO journal (source, task_id, old_status, new_status, observed_ms, baseline) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                (source, event.task.task_id, *transition, now_ms, baseline)
                for event in commit.events
                if (transition := _transition(event)) is not None
            ),
        )

    # --- alerts, outbox, silences (see state/alertstore.py) -----------------------------------

    @guarded
    def active_alerts(self, source: str) -> dict[str, Alert]:
        return alertstore.active_alerts(self.db, source)

    @guarded
    def recent_failures(self, source: str, since: datetime) -> list[tuple[datetime, Task]]:
        rows = self.db.execute(
            f"SELECT j.observed_ms, {_JOINED_TASK_COLUMNS} "  # noqa: S608 - constant column list
            "FROM journal j JOIN tasks t ON t.source = j.source AND t.task_id = j.task_id "
            "WHERE j.source = ? AND j.observed_ms >= ? AND j.baseline = 0 "
            "AND t.phase = ? AND j.new_status = t.status ORDER BY j.observed_ms",
            (source, to_epoch_ms(since), Phase.FAILED.value),
        ).fetchall()
        return [(from_epoch_ms(r["observed_ms"]), _task_from_row(source, r)) for r in rows]

    @guarded
    def record_poll_failure(self, source: str, now: datetime, error: str) -> datetime:
        now_ms = to_epoch_ms(now)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sources (source, failing_since_ms, last_error) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET "
                "failing_since_ms = COALESCE(sources.failing_since_ms, excluded.failing_since_ms), "
                "last_error = excluded.last_error",
                (source, now_ms, self._redact(error)),
            )
            row = db.execute(
                "SELECT failing_since_ms FROM sources WHERE source = ?", (source,)
            ).fetchone()
        return from_epoch_ms(row[0])

    @guarded
    def apply_alerts(
        self, batch: AlertBatch, now: datetime, *, dry_run: bool = False
    ) -> list[Notification]:
        with self.transaction(rollback=dry_run) as db:
            alertstore.apply_alerts(db, self._redact.deep(batch), now)
            return alertstore.flush(db, now, force=dry_run)

    @guarded
    def flush(self, now: datetime, *, force: bool = False) -> list[Notification]:
        with self.transaction() as db:
            return alertstore.flush(db, now, force=force)

    @guarded
    def enqueue(self, notification: Notification, now: datetime) -> int:
        with self.transaction() as db:
            return alertstore.enqueue(db, self._redact.deep(notification), now)

    @guarded
    def due_notifications(
        self, now: datetime, limit: int = 500, receivers: Container[str] | None = None
    ) -> list[OutboxItem]:
        return alertstore.due(self.db, now, limit, receivers=receivers)

    @guarded
    def thread_ref(self, thread_key: str) -> str | None:
        return alertstore.thread_ref(self.db, thread_key)

    @guarded
    def mark_sent(self, item: OutboxItem, now: datetime, thread_ref: str | None) -> None:
        with self.transaction() as db:
            alertstore.mark_sent(db, item, now, thread_ref)

    @guarded
    def mark_retry(self, item: OutboxItem, next_attempt: datetime, error: str) -> None:
        with self.transaction() as db:
            alertstore.mark_retry(db, item, next_attempt, self._redact(error))

    @guarded
    def mark_dead(
        self, item: OutboxItem, now: datetime, error: str, notice: AlertBatch | None = None
    ) -> None:
        with self.transaction() as db:
            notice = self._redact.deep(notice) if notice is not None else None
            alertstore.mark_dead(db, item, now, self._redact(error), notice)

    @guarded
    def outbox_depth(self) -> tuple[int, datetime | None]:
        return alertstore.outbox_depth(self.db)

    @guarded
    def task_counts(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute(
            "SELECT source, status, COUNT(*) FROM tasks INDEXED BY tasks_by_status "
            "GROUP BY source, status"
        ).fetchall()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    @guarded
    def alert_records(self, since: datetime, limit: int = 500) -> list[AlertRecord]:
        rows = self.db.execute(
            "SELECT a.key, a.payload, a.outcome, a.updated_ms, g.receiver, m.notified, "
            "g.labels, g.last_sent_ms "
            "FROM alerts a LEFT JOIN members m ON m.alert_key = a.key "
            "LEFT JOIN groups g ON g.id = m.group_id "
            "WHERE (a.state = 'firing' AND a.one_shot = 0) OR a.updated_ms >= ? "
            "ORDER BY a.updated_ms DESC, a.key LIMIT ?",
            (to_epoch_ms(since), limit),
        ).fetchall()
        found: dict[str, AlertRecord] = {}
        for row in rows:
            record = found.get(row["key"])
            if record is None:
                with decoding("alert"):
                    alert = decode_alert(row["payload"])
                record = AlertRecord(alert, row["outcome"], from_epoch_ms(row["updated_ms"]))
            if row["receiver"] is not None:
                with decoding("group"):
                    labels = tuple((str(k), str(v)) for k, v in json.loads(row["labels"]))
                delivery = AlertDelivery(
                    str(row["receiver"]),
                    str(row["notified"] or ""),
                    labels,
                    _dt(row["last_sent_ms"]),
                )
                record = replace(record, receivers=(*record.receivers, delivery))
            found[row["key"]] = record
        return list(found.values())

    @guarded
    def outbox_entries(self, since: datetime, limit: int = 200) -> list[OutboxEntry]:
        rows = self.db.execute(
            "SELECT * FROM outbox WHERE state = 'pending' OR done_ms >= ? ORDER BY id DESC LIMIT ?",
            (to_epoch_ms(since), limit),
        ).fetchall()
        entries = []
        for row in rows:
            try:
                notification: Notification | None = decode_notification(row["payload"])
            except (StateError, ValueError, KeyError, TypeError):
                notification = None  # shown as unreadable; the sender reports it
            entries.append(
                OutboxEntry(
                    entry_id=int(row["id"]),
                    receiver=str(row["receiver"]),
                    state=str(row["state"]),
                    attempts=int(row["attempts"]),
                    created=from_epoch_ms(row["created_ms"]),
                    next_attempt=from_epoch_ms(row["next_attempt_ms"]),
                    notification=notification,
                    last_error=row["last_error"],
                    done=_dt(row["done_ms"]),
                )
            )
        return entries

    @guarded
    def outbox(self) -> list[Row]:
        """Every outbox row, oldest first (inspection and tests)."""
        return self.db.execute("SELECT * FROM outbox ORDER BY id").fetchall()

    @guarded
    def alerts(self) -> list[Row]:
        return self.db.execute("SELECT * FROM alerts ORDER BY starts_ms, key").fetchall()

    @guarded
    def silences(self) -> list[Silence]:
        return alertstore.silences(self.db)

    @guarded
    def add_silence(self, silence: Silence) -> None:
        with self.transaction() as db:
            alertstore.add_silence(db, silence)

    @guarded
    def expire_silence(self, silence_id: str, now: datetime) -> bool:
        with self.transaction() as db:
            return alertstore.expire_silence(db, silence_id, now)

    @guarded
    def sync_config_silences(self, silences: Sequence[Silence]) -> None:
        with self.transaction() as db:
            alertstore.sync_config_silences(db, silences)

    # --- leases -------------------------------------------------------------------------------

    @guarded
    def claim(
        self,
        owner: str,
        names: Iterable[str],
        now: datetime,
        ttl: timedelta,
        *,
        release: Iterable[str] = (),
        leaving: bool = False,
    ) -> dict[str, Lease]:
        """Renew or take ``names`` for ``owner`` and give up ``release``, in one transaction;
        returns the leases ``owner`` holds now. A lease held by another owner is taken only
        once it has expired (on an `exclusive` backend, always), with the next epoch.
        ``leaving``: ``owner`` stops (is no longer counted live)."""
        now_ms = to_epoch_ms(now)
        expires_ms = now_ms + int(ttl.total_seconds() * 1000)
        held: dict[str, Lease] = {}
        with self.transaction() as db:
            if leaving:
                db.execute("DELETE FROM replicas WHERE owner = ?", (owner,))
            else:
                db.execute(
                    "INSERT INTO replicas (owner, seen_ms, started_ms) VALUES (?, ?, ?) "
                    "ON CONFLICT (owner) DO UPDATE SET seen_ms = excluded.seen_ms",
                    (owner, now_ms, now_ms),
                )
            db.execute(
                "DELETE FROM replicas WHERE seen_ms < ?",
                (now_ms - 10 * int(ttl.total_seconds() * 1000),),
            )
            for name in release:
                # expires_ms keeps the moment of release: a handover, not an orphan
                db.execute(
                    "UPDATE leases SET owner = NULL, expires_ms = ? WHERE name = ? AND owner = ?",
                    (now_ms, name, owner),
                )
            for name in names:
                lease = self._claim_one(db, name, owner, now_ms, expires_ms)
                if lease is not None:
                    held[name] = lease
        return held

    def _claim_one(
        self, db: Connection, name: str, owner: str, now_ms: int, expires_ms: int
    ) -> Lease | None:
        row = db.execute(
            "SELECT owner, epoch, expires_ms FROM leases WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO leases (name, owner, epoch, expires_ms, acquired_ms) "
                "VALUES (?, ?, 1, ?, ?)",
                (name, owner, expires_ms, now_ms),
            )
            return Lease(name, owner, 1)
        current = _Claim(row["owner"], int(row["epoch"]), int(row["expires_ms"]))
        if current.owner == owner:
            # Ours, expired or not: nobody took it meanwhile (the epoch would have moved),
            # so renewing at the same epoch is safe.
            db.execute("UPDATE leases SET expires_ms = ? WHERE name = ?", (expires_ms, name))
            return Lease(name, owner, current.epoch)
        if current.owner is not None and current.expires_ms > now_ms and not self.exclusive:
            return None
        epoch = current.epoch + 1
        db.execute(
            "UPDATE leases SET owner = ?, epoch = ?, expires_ms = ?, acquired_ms = ? "
            "WHERE name = ?",
            (owner, epoch, expires_ms, now_ms, name),
        )
        return Lease(name, owner, epoch)

    @guarded
    def live_replicas(self, now: datetime, ttl: timedelta) -> list[str]:
        """Owners seen within ``ttl``, in order."""
        since = to_epoch_ms(now) - int(ttl.total_seconds() * 1000)
        rows = self.db.execute(
            "SELECT owner FROM replicas WHERE seen_ms >= ? ORDER BY owner", (since,)
        ).fetchall()
        return [str(r[0]) for r in rows]

    @guarded
    def lease_holders(self) -> list[LeaseHolder]:
        return self._lease_holders()

    def _lease_holders(self) -> list[LeaseHolder]:
        rows = self.db.execute(
            "SELECT name, owner, epoch, expires_ms FROM leases ORDER BY name"
        ).fetchall()
        return [
            LeaseHolder(
                name=str(r["name"]),
                owner=r["owner"],
                epoch=int(r["epoch"]),
                expires=from_epoch_ms(int(r["expires_ms"])),
            )
            for r in rows
        ]


def _transition(event: Event) -> tuple[str | None, str | None] | None:
    """(old status, new status) for the journal; None for events that change no status."""
    if isinstance(event, TaskGone):
        return (event.task.status, None)
    if isinstance(event, TaskAppeared):
        return (None, event.task.status)
    if isinstance(event, StatusChanged):
        return (event.old, event.new)
    assert isinstance(event, (TaskUpdated, StillOpen))
    return None


LARGE_COMMIT = 5_000
"""Events in a commit above which a backend gives back what it used (`after_large_commit`)."""
