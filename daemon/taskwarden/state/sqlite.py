"""The embedded state store: one SQLite file in WAL mode with durable commits."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from taskwarden.errors import (
    SchemaTooNewError,
    StateBusyError,
    StateCorruptError,
    StateError,
    StateMissingError,
    StateUnavailableError,
)
from taskwarden.state.lock import StateLock, create_private
from taskwarden.state.schema import SCHEMA_VERSION, migrate
from taskwarden.state.sqlstore import SqlStateStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from taskwarden.logs import Redactor

log = structlog.get_logger(__name__)


_CORRUPT_CODES = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED


def translate(exc: sqlite3.Error, what: str = "state file") -> StateError:
    """SQLite's error as ours: corruption (move the file aside), busy (wait, then fail
    clearly), anything else unavailable (disk full, I/O: retry later, move nothing)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in _CORRUPT_CODES or type(exc) is sqlite3.DatabaseError:
        return StateCorruptError(f"{what}: {exc}")
    if str(exc).startswith("Could not decode to UTF-8"):
        # A damaged text column: the row factory fails before our decoding sees it.
        return StateCorruptError(f"{what}: {exc}")
    if primary in _BUSY_CODES:
        return StateBusyError(
            f"{what} is busy: another connection held it past the wait ({exc}); nothing was "
            "changed or moved, try again"
        )
    return StateUnavailableError(f"{what}: {exc}")


class SqliteStateStore(SqlStateStore):
    """`StateStore` on one SQLite file; holds the file's lock while open."""

    driver_errors = (sqlite3.Error,)
    schema_version = SCHEMA_VERSION
    exclusive = True

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        lock: StateLock | None,
        *,
        read_only: bool = False,
        redactor: Redactor | None = None,
    ) -> None:
        super().__init__(redactor)
        self._conn = conn
        self.path = path
        self._lock = lock
        self.read_only = read_only

    @property
    def db(self) -> sqlite3.Connection:
        return self._conn

    @property
    def location(self) -> str:
        return str(self.path)

    def translate(self, exc: Exception) -> StateError:
        assert isinstance(exc, sqlite3.Error)
        return translate(exc)

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

    def after_large_commit(self) -> None:
        # A catch-up grew the WAL to the size of its writes; give the disk back now
        # rather than keep it for the life of the process.
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


# --- opening, locking and recovering ---------------------------------------------------------

BUSY_TIMEOUT = 10.0
"""Seconds a statement waits for another connection before failing (never moving the file)."""
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
