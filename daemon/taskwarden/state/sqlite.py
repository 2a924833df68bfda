"""The embedded state store: one SQLite file in WAL mode with durable commits."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar
from urllib.parse import quote

import structlog

from taskwarden.diff import StatusChanged, StillOpen, TaskAppeared, TaskGone, TaskUpdated
from taskwarden.errors import (
    SchemaTooNewError,
    StateBusyError,
    StateCorruptError,
    StateError,
    StateMissingError,
    StateUnavailableError,
)
from taskwarden.logs import Redactor
from taskwarden.model import OpenTask, Phase, Product, SourceView, Task
from taskwarden.state import alertstore
from taskwarden.state.decoding import decoding
from taskwarden.state.lock import StateLock, create_private
from taskwarden.state.protocol import CycleCommit, SourceStatus, StateSummary
from taskwarden.state.schema import SCHEMA_VERSION, migrate
from taskwarden.timeutil import from_epoch_ms, to_epoch_ms

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from datetime import datetime

    from taskwarden.alerts import Alert, Notification
    from taskwarden.delivery import OutboxItem
    from taskwarden.diff import Event
    from taskwarden.routing import AlertBatch, Silence

log = structlog.get_logger(__name__)

_OPEN_PHASES = (Phase.OPEN.value, Phase.RUNNING.value, Phase.UNKNOWN.value)
_TERMINAL_PHASES = tuple(p.value for p in Phase if p.is_terminal)
_IN_CHUNK = 500
"""SQLite caps bound parameters per statement; id lists are sent in chunks."""

_TASK_COLUMNS = "task_id, status, phase, kind, received_ms, finished_ms, products, uri, attributes"
_JOINED_TASK_COLUMNS = ", ".join(f"t.{c.strip()}" for c in _TASK_COLUMNS.split(","))

_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED

P = ParamSpec("P")
R = TypeVar("R")


def translate(exc: sqlite3.Error, what: str = "state file") -> StateError:
    """SQLite's error as ours: corruption (move the file aside), busy (wait, then fail
    clearly), anything else unavailable (disk full, I/O: retry later, move nothing)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES or type(exc) is sqlite3.DatabaseError:
        return StateCorruptError(f"{what}: {exc}")
    if primary in _BUSY_CODES:
        return StateBusyError(
            f"{what} is busy: another connection held it past the wait ({exc}); nothing was "
            "changed or moved, try again"
        )
    return StateUnavailableError(f"{what}: {exc}")


def guarded(method: Callable[P, R]) -> Callable[P, R]:
    """A store method whose SQLite errors surface as `StateError`s; text that is not
    UTF-8 (SQLite hands it over as it is stored) is damage."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        except UnicodeDecodeError as exc:
            raise StateCorruptError(f"state file: a stored text is not UTF-8 ({exc})") from exc

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


def _task_from_row(source: str, row: sqlite3.Row) -> Task:
    with decoding("task"):
        return _decode_task(source, row)


def _decode_task(source: str, row: sqlite3.Row) -> Task:
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


class SqliteStateStore:
    """`StateStore` on one SQLite file; holds the file's lock while open.

    Every public method raises `StateError`s only: `StateCorruptError` when the file or a
    row in it is damaged, `StateUnavailableError` when it cannot be written now."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        lock: StateLock | None,
        *,
        read_only: bool = False,
        redactor: Redactor | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self._lock = lock
        self.read_only = read_only
        self._redact = redactor if redactor is not None else Redactor()
        """Every error text and payload written passes through it: no secret is stored."""

    # --- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: all or nothing, durable once it returns.

        ``rollback`` runs the same work and discards it (dry runs). A failed COMMIT (disk
        full) leaves no transaction open behind it."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
            self._conn.execute("ROLLBACK" if rollback else "COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def quarantine(self, now: datetime, reason: str) -> Path:
        """Damage found while running: close the file and move it aside, keeping the lock,
        so that the next start begins a fresh state (reporting, not baselining)."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        target = move_aside(self.path, now, reason)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return target

    @guarded
    def probe_write(self) -> None:
        """A tiny durable write: raises while the state cannot be written (disk full)."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_write_probe', '1') "
                "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- meta -----------------------------------------------------------------------------

    @guarded
    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @guarded
    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- reads ------------------------------------------------------------------------------

    @guarded
    def source_view(self, source: str) -> SourceView:
        row = self._conn.execute(
            "SELECT checkpoint_ms FROM sources WHERE source = ?", (source,)
        ).fetchone()
        open_rows = self._open_rows(source)
        return SourceView(
            checkpoint=_dt(row["checkpoint_ms"]) if row is not None else None,
            open_tasks=tuple(
                OpenTask(r["task_id"], from_epoch_ms(r["received_ms"])) for r in open_rows
            ),
        )

    def _open_rows(self, source: str) -> list[sqlite3.Row]:
        """Open tasks, oldest first, through the phase index.

        Without statistics SQLite may prefer the primary key (all of the source's rows: a
        scan of the window, 15 ms at 100k tasks) or, with ORDER BY, the received-time index;
        INDEXED BY pins the plan. The open set is small, so it is sorted here."""
        rows = self._conn.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_phase "  # noqa: S608 - constant column list
            "WHERE source = ? AND phase IN (?, ?, ?)",
            (source, *_OPEN_PHASES),
        ).fetchall()
        return sorted(rows, key=lambda r: (r["received_ms"], r["task_id"]))

    @guarded
    def tracked(self, source: str, task_ids: Iterable[str]) -> dict[str, Task]:
        ids = list(dict.fromkeys(task_ids))
        found: dict[str, Task] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT {_TASK_COLUMNS} FROM tasks WHERE source = ? AND task_id IN ({marks})",  # noqa: S608 - placeholders only
                (source, *chunk),
            )
            for row in rows:
                found[row["task_id"]] = _task_from_row(source, row)
        return found

    @guarded
    def needs_baseline(self, source: str) -> bool:
        """A fresh file's first poll is a baseline; after a corrupt-file recovery it is not,
        because failures may have happened while the old state was unreadable."""
        if self.get_meta("recovered_from") is not None:
            return False
        row = self._conn.execute(
            "SELECT checkpoint_ms FROM sources WHERE source = ?", (source,)
        ).fetchone()
        return row is None or row["checkpoint_ms"] is None

    @guarded
    def journal(self, source: str | None = None) -> list[sqlite3.Row]:
        """The transition journal, oldest first (inspection and tests)."""
        if source is None:
            return self._conn.execute("SELECT * FROM journal ORDER BY id").fetchall()
        return self._conn.execute(
            "SELECT * FROM journal WHERE source = ? ORDER BY id", (source,)
        ).fetchall()

    @guarded
    def summary(self) -> StateSummary:
        sources = []
        for row in self._conn.execute("SELECT * FROM sources ORDER BY source").fetchall():
            name = row["source"]
            counts = dict(
                self._conn.execute(
                    "SELECT status, COUNT(*) FROM tasks INDEXED BY tasks_by_status "
                    "WHERE source = ? GROUP BY status",
                    (name,),
                ).fetchall()
            )
            open_rows = self._open_rows(name)
            sources.append(
                SourceStatus(
                    source=name,
                    checkpoint=_dt(row["checkpoint_ms"]),
                    last_success=_dt(row["last_success_ms"]),
                    last_strategy=row["last_strategy"],
                    last_api_calls=row["last_api_calls"],
                    tasks_by_status={str(k): int(v) for k, v in counts.items()},
                    open_tasks=tuple(_task_from_row(name, r) for r in open_rows),
                )
            )
        journal_entries = self._conn.execute("SELECT COUNT(*) FROM journal").fetchone()[0]
        return StateSummary(
            path=str(self.path),
            schema_version=SCHEMA_VERSION,
            sources=tuple(sources),
            journal_entries=int(journal_entries),
        )

    # --- the one write path of a poll -------------------------------------------------------

    @guarded
    def commit_cycle(
        self, source: str, commit: CycleCommit, *, dry_run: bool = False
    ) -> list[Notification]:
        now_ms = to_epoch_ms(commit.now)
        made: list[Notification] = []
        with self.transaction(rollback=dry_run) as conn:
            self._apply_events(conn, source, commit, now_ms)
            conn.execute(
                "INSERT INTO sources (source, checkpoint_ms, last_success_ms, last_strategy, "
                "last_api_calls) VALUES (?, ?, ?, ?, ?) ON CONFLICT (source) DO UPDATE SET "
                "checkpoint_ms = MAX(COALESCE(checkpoint_ms, 0), excluded.checkpoint_ms), "
                "last_success_ms = excluded.last_success_ms, "
                "last_strategy = excluded.last_strategy, "
                "last_api_calls = excluded.last_api_calls, "
                "failing_since_ms = NULL, last_error = NULL",
                (source, to_epoch_ms(commit.checkpoint), now_ms, commit.strategy, commit.api_calls),
            )
            if commit.alerts:
                alertstore.apply_alerts(conn, self._redact.deep(commit.alerts), commit.now)
            if commit.flush:
                made = alertstore.flush(conn, commit.now, force=dry_run)
            if commit.prune_before is not None:
                alertstore.prune(conn, commit.prune_before)
                cutoff = to_epoch_ms(commit.prune_before)
                conn.execute(
                    "DELETE FROM tasks INDEXED BY tasks_by_phase "
                    "WHERE source = ? AND phase IN (?, ?, ?) AND received_ms < ?",
                    (source, *_TERMINAL_PHASES, cutoff),
                )
                conn.execute(
                    "DELETE FROM journal WHERE source = ? AND observed_ms < ?", (source, cutoff)
                )
        if len(commit.events) >= LARGE_COMMIT and not dry_run:
            # A catch-up grew the WAL to the size of its writes; give the disk back now
            # rather than keep it for the life of the process.
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return made

    # --- alerts, outbox, silences (see state/alertstore.py) -----------------------------------

    @guarded
    def active_alerts(self, source: str) -> dict[str, Alert]:
        return alertstore.active_alerts(self._conn, source)

    @guarded
    def recent_failures(self, source: str, since: datetime) -> list[tuple[datetime, Task]]:
        rows = self._conn.execute(
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
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO sources (source, failing_since_ms, last_error) VALUES (?, ?, ?) "
                "ON CONFLICT (source) DO UPDATE SET "
                "failing_since_ms = COALESCE(failing_since_ms, excluded.failing_since_ms), "
                "last_error = excluded.last_error",
                (source, now_ms, self._redact(error)),
            )
            row = conn.execute(
                "SELECT failing_since_ms FROM sources WHERE source = ?", (source,)
            ).fetchone()
        return from_epoch_ms(row[0])

    @guarded
    def apply_alerts(
        self, batch: AlertBatch, now: datetime, *, dry_run: bool = False
    ) -> list[Notification]:
        with self.transaction(rollback=dry_run) as conn:
            alertstore.apply_alerts(conn, self._redact.deep(batch), now)
            return alertstore.flush(conn, now, force=dry_run)

    @guarded
    def flush(self, now: datetime, *, force: bool = False) -> list[Notification]:
        with self.transaction() as conn:
            return alertstore.flush(conn, now, force=force)

    @guarded
    def enqueue(self, notification: Notification, now: datetime) -> int:
        with self.transaction() as conn:
            return alertstore.enqueue(conn, self._redact.deep(notification), now)

    @guarded
    def due_notifications(self, now: datetime, limit: int = 500) -> list[OutboxItem]:
        return alertstore.due(self._conn, now, limit)

    @guarded
    def thread_ref(self, thread_key: str) -> str | None:
        return alertstore.thread_ref(self._conn, thread_key)

    @guarded
    def mark_sent(self, item: OutboxItem, now: datetime, thread_ref: str | None) -> None:
        with self.transaction() as conn:
            alertstore.mark_sent(conn, item, now, thread_ref)

    @guarded
    def mark_retry(self, item: OutboxItem, next_attempt: datetime, error: str) -> None:
        with self.transaction() as conn:
            alertstore.mark_retry(conn, item, next_attempt, self._redact(error))

    @guarded
    def mark_dead(
        self, item: OutboxItem, now: datetime, error: str, notice: AlertBatch | None = None
    ) -> None:
        with self.transaction() as conn:
            notice = self._redact.deep(notice) if notice is not None else None
            alertstore.mark_dead(conn, item, now, self._redact(error), notice)

    @guarded
    def outbox_depth(self) -> tuple[int, datetime | None]:
        return alertstore.outbox_depth(self._conn)

    @guarded
    def task_counts(self) -> dict[tuple[str, str], int]:
        rows = self._conn.execute(
            "SELECT source, status, COUNT(*) FROM tasks INDEXED BY tasks_by_status "
            "GROUP BY source, status"
        ).fetchall()
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}

    @guarded
    def outbox(self) -> list[sqlite3.Row]:
        """Every outbox row, oldest first (inspection and tests)."""
        return self._conn.execute("SELECT * FROM outbox ORDER BY id").fetchall()

    @guarded
    def alerts(self) -> list[sqlite3.Row]:
        return self._conn.execute("SELECT * FROM alerts ORDER BY starts_ms, key").fetchall()

    @guarded
    def silences(self) -> list[Silence]:
        return alertstore.silences(self._conn)

    @guarded
    def add_silence(self, silence: Silence) -> None:
        with self.transaction() as conn:
            alertstore.add_silence(conn, silence)

    @guarded
    def expire_silence(self, silence_id: str, now: datetime) -> bool:
        with self.transaction() as conn:
            return alertstore.expire_silence(conn, silence_id, now)

    @guarded
    def sync_config_silences(self, silences: Sequence[Silence]) -> None:
        with self.transaction() as conn:
            alertstore.sync_config_silences(conn, silences)

    @staticmethod
    def _apply_events(
        conn: sqlite3.Connection, source: str, commit: CycleCommit, now_ms: int
    ) -> None:
        """Rows are generated, not listed: a first poll over a large window writes ~100k of
        each, and building them all at once would double the cycle's peak memory."""
        baseline = int(commit.baseline)
        conn.executemany(
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
        conn.executemany(
            "DELETE FROM tasks WHERE source = ? AND task_id = ?",
            ((source, e.task.task_id) for e in commit.events if isinstance(e, TaskGone)),
        )
        conn.executemany(
            "INSERT INTO journal (source, task_id, old_status, new_status, observed_ms, baseline) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                (source, event.task.task_id, *transition, now_ms, baseline)
                for event in commit.events
                if (transition := _transition(event)) is not None
            ),
        )


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


# --- opening, locking and recovering ---------------------------------------------------------

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another connection before failing (never moving the file)."""
LARGE_COMMIT = 5_000
"""Events in a commit above which the WAL is checkpointed and truncated at once."""
WAL_LIMIT = 16 * 1024 * 1024
"""Bytes the WAL is truncated to after a checkpoint (journal_size_limit)."""


def _connect(
    path: Path, *, read_only: bool = False, busy_timeout: float = BUSY_TIMEOUT
) -> sqlite3.Connection:
    if read_only:
        # A read-only open must create nothing: without a -wal file (no writer since the
        # last clean close) SQLite would create -wal and -shm; immutable reads the file as is.
        wal = Path(str(path) + "-wal")
        mode = "ro" if wal.exists() else "ro&immutable=1"
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode={mode}",
            uri=True,
            isolation_level=None,
            timeout=busy_timeout,
        )
        conn.row_factory = sqlite3.Row
        return conn
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT}")
    return conn


def _integrity(conn: sqlite3.Connection) -> None:
    """Raises StateCorruptError unless the whole file checks out (indexes included:
    ``quick_check`` misses index damage)."""
    problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StateCorruptError(f"integrity check failed: {'; '.join(problems)}")


def _schema_version(conn: sqlite3.Connection) -> int:
    """0 for an empty file; raises StateCorruptError for a file that is not ours."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "meta" not in tables:
        raise StateCorruptError(
            f"not a taskwarden state file (tables: {', '.join(sorted(tables))})"
        )
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        raise StateCorruptError("the meta table has no schema_version")
    try:
        return int(row[0])
    except ValueError:
        raise StateCorruptError(f"schema_version is {row[0]!r}, not a number") from None


def move_aside(path: Path, now: datetime, reason: str) -> Path:
    """Rename the file (and its -wal, -shm) to ``<name>.corrupt-<time>``, loudly."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(str(path) + suffix)
        if part.exists():
            part.rename(Path(str(target) + suffix))
    log.critical(
        "state.corrupt_moved_aside",
        path=str(path),
        moved_to=str(target),
        reason=reason,
        consequence="polling restarts from the lookback; alerts may repeat, none are lost",
    )
    return target


def open_state(
    path: Path | str,
    *,
    now: datetime,
    lock: bool = True,
    read_only: bool = False,
    snapshot: bool = False,
    busy_timeout: float | None = None,
    redactor: Redactor | None = None,
) -> SqliteStateStore:
    """Open (creating or migrating) the state file, taking its lock.

    A file that is not a readable taskwarden database (``integrity_check``) is moved aside
    and replaced, loudly: the daemon must not crash-loop on it. A busy file is waited for
    (`BUSY_TIMEOUT`) and then refused, never moved. A file from a newer taskwarden is
    refused. ``read_only`` (inspection commands, which may run beside the daemon) takes no
    lock and creates, migrates and moves nothing. ``snapshot`` (dry runs) works on an
    in-memory copy: every write is allowed and none reaches the file.
    """
    busy_timeout = BUSY_TIMEOUT if busy_timeout is None else busy_timeout
    if read_only:
        return _open_read_only(Path(path), busy_timeout)
    if snapshot:
        return _open_snapshot(Path(path), busy_timeout, redactor)
    state_path = Path(os.path.realpath(path))
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_lock = StateLock(state_path) if lock else None
    if state_lock is not None:
        state_lock.acquire()
    else:
        create_private(state_path)
    try:
        conn, recovered_from = _open_or_recover(state_path, now, state_lock, busy_timeout)
    except BaseException:
        if state_lock is not None:
            state_lock.release()
        raise
    store = SqliteStateStore(conn, state_path, state_lock, redactor=redactor)
    if recovered_from is not None:
        store.set_meta("recovered_from", str(recovered_from))
    return store


def _open_read_only(path: Path, busy_timeout: float) -> SqliteStateStore:
    if not path.exists():
        raise StateMissingError(f"state file {path} does not exist yet: nothing has been polled")
    try:
        conn = _connect(path, read_only=True, busy_timeout=busy_timeout)
        version = _schema_version(conn)
    except sqlite3.Error as exc:
        raise translate(exc, f"state file {path}") from exc
    except UnicodeDecodeError as exc:
        raise StateCorruptError(f"state file {path}: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        newer = version > SCHEMA_VERSION
        raise SchemaTooNewError(
            f"state file {path} has schema version {version}; this taskwarden reads "
            f"{SCHEMA_VERSION}"
            + (": upgrade taskwarden" if newer else ": the daemon migrates it when it starts")
        )
    return SqliteStateStore(conn, path, None, read_only=True)


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"state file {path} has schema version {version}, but this taskwarden "
            f"understands up to {SCHEMA_VERSION}; upgrade taskwarden or point it at "
            "another state file"
        )


def _open_snapshot(path: Path, busy_timeout: float, redactor: Redactor | None) -> SqliteStateStore:
    """An in-memory copy of the file (or a fresh state when there is none yet)."""
    memory = sqlite3.connect(":memory:", isolation_level=None)
    memory.row_factory = sqlite3.Row
    version = 0
    try:
        if path.exists():
            reader = _connect(path, read_only=True, busy_timeout=busy_timeout)
            try:
                reader.backup(memory)
            finally:
                reader.close()
            version = _schema_version(memory)
        _refuse_newer(path, version)
        migrate(memory, version)
    except sqlite3.Error as exc:
        memory.close()
        raise translate(exc, f"state file {path}") from exc
    except BaseException:
        memory.close()
        raise
    return SqliteStateStore(memory, path, None, redactor=redactor)


def _open_or_recover(
    path: Path, now: datetime, state_lock: StateLock | None, busy_timeout: float
) -> tuple[sqlite3.Connection, Path | None]:
    recovered_from: Path | None = None
    for _ in range(2):
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(path, busy_timeout=busy_timeout)
            _integrity(conn)
            version = _schema_version(conn)
        except (sqlite3.Error, StateCorruptError, UnicodeDecodeError) as exc:
            # A damaged file can even make SQLite's own message undecodable.
            if conn is not None:
                conn.close()
            problem = (
                translate(exc, f"state file {path}")
                if isinstance(exc, sqlite3.Error)
                else StateCorruptError(f"state file {path}: {exc}")
            )
            if not isinstance(problem, StateCorruptError):
                raise problem from exc  # busy, full, unreadable: fail clearly, move nothing
            recovered_from = move_aside(path, now, str(exc))
            if state_lock is not None:
                state_lock.relock_database()
            else:
                create_private(path)
            continue
        try:
            _refuse_newer(path, version)
        except SchemaTooNewError:
            conn.close()
            raise
        try:
            migrate(conn, version)
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, f"migrating state file {path}") from exc
        return conn, recovered_from
    raise StateCorruptError(f"state file {path} could not be recreated after moving it aside")
