"""The shared state store: PostgreSQL through psycopg 3, for several replicas.

Every write transaction first takes one transaction-scoped advisory lock, so writers are
serialized across replicas exactly as SQLite serializes them in one file: a group is
flushed once, outbox ids are assigned in commit order (each receiver's FIFO holds across
replicas), and a cycle's fence check cannot interleave with a lease takeover. Commits are
milliseconds long; what scales out across replicas is the polling (the vendor I/O, the
parsing and the diff), not the writes. Transaction-scoped locks hold no session state.

Every wait is bounded: ``connect_timeout``, ``statement_timeout``, ``lock_timeout``,
TCP keepalives and ``tcp_user_timeout`` (a vanished server is noticed within seconds).
A dropped connection fails the call (`StateUnavailableError`); the next call reconnects.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from typing import TYPE_CHECKING, Any, Final

import psycopg
import psycopg.errors
import structlog

from taskwarden.errors import (
    SchemaOutdatedError,
    SchemaTooNewError,
    StateBusyError,
    StateError,
    StateMissingError,
    StateUnavailableError,
)
from taskwarden.state.schema import LEASES, SCHEMA_VERSION
from taskwarden.state.sqlstore import Cursor, SqlStateStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

    from psycopg.rows import RowMaker

    from taskwarden.logs import Redactor

log = structlog.get_logger(__name__)

WRITER_LOCK: Final = 0x7461736B  # "task": the advisory lock key every write transaction takes
CONNECT_TIMEOUT = 5
"""Seconds to reach the server."""
RECONNECT_PAUSE = 5.0
"""Seconds after a failed connection attempt during which calls fail without trying."""
STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 10_000
"""A writer waits this long for another replica's transaction, then fails clearly."""


class Row:
    """A result row by position or by column name, as `sqlite3.Row` reads."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._index)


def keyed_rows(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return functools.partial(Row, index)


_HINT = re.compile(r"\s+INDEXED BY \w+")


@functools.lru_cache(maxsize=512)
def to_postgres(sql: str) -> str:
    """``?`` placeholders as ``%s``; SQLite's plan pins dropped (the planner has stats)."""
    return _HINT.sub("", sql).replace("%", "%%").replace("?", "%s")


class PgConnection:
    """The `Connection` the shared queries use, over a psycopg connection."""

    def __init__(self, raw: psycopg.Connection[Row]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        # Never prepared: once psycopg prepares a statement, PostgreSQL may switch to a
        # generic plan, and the generic plan of `tracked`'s 500-id IN list scanned every
        # task (3.3 s a call at 100,000 tasks, against milliseconds planned with the values).
        # executemany's single-row upserts stay prepared: their plan is the primary key.
        return self.raw.execute(to_postgres(sql), parameters, prepare=False)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Cursor:
        cursor = self.raw.cursor()
        cursor.executemany(to_postgres(sql), parameters)
        return cursor


def connect(url: str, password: str | None, *, application: str = "taskwarden") -> PgConnection:
    options = (
        f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={LOCK_TIMEOUT_MS} "
        "-c idle_in_transaction_session_timeout=60000"
    )
    extra: dict[str, Any] = {} if password is None else {"password": password}
    raw = psycopg.connect(
        url,
        autocommit=True,
        row_factory=keyed_rows,
        connect_timeout=CONNECT_TIMEOUT,
        options=options,
        application_name=application,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
        tcp_user_timeout=10_000,
        **extra,
    )
    return PgConnection(raw)


def translate(exc: Exception, what: str = "PostgreSQL state") -> StateError:
    """psycopg's error as ours: a lock or statement that waited too long is busy; anything
    else (server down, connection dropped, disk full there) is unavailable: retry later."""
    if isinstance(exc, (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)):
        return StateBusyError(f"{what} is busy: another replica held it past the wait ({exc})")
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return StateUnavailableError(
            f"{what}: the schema is missing ({exc}); run `taskwarden migrate`"
        )
    return StateUnavailableError(f"{what}: {type(exc).__name__}: {exc}".strip())


class PostgresStateStore(SqlStateStore):
    """`StateStore` on a PostgreSQL database shared by the replicas."""

    driver_errors = (psycopg.Error,)
    schema_version = SCHEMA_VERSION
    exclusive = False

    def __init__(
        self,
        opener: Callable[[], PgConnection],
        location: str,
        *,
        redactor: Redactor | None = None,
        discard_writes: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        connection: PgConnection | None = None,
    ) -> None:
        """``opener`` makes each new connection; ``connection``, when given, is the first
        (the one `open_postgres` checked the schema on). ``discard_writes``: every
        transaction is rolled back (dry runs beside the replicas: the same work, nothing
        reaches the database)."""
        super().__init__(redactor)
        self._opener = opener
        self._location = location
        self._discard = discard_writes
        self._monotonic = monotonic
        self._next_attempt = float("-inf")
        self._conn: PgConnection | None = connection if connection is not None else opener()

    @property
    def db(self) -> PgConnection:
        assert self._conn is not None, "the store is closed"
        return self._conn

    @property
    def location(self) -> str:
        return self._location

    def translate(self, exc: Exception) -> StateError:
        return translate(exc)

    def reconnect_if_lost(self) -> None:
        """A new connection after a lost one; after a failed attempt, calls fail at once
        for `RECONNECT_PAUSE` (the store is synchronous: an unreachable server must not
        hold the event loop at every call)."""
        conn = self._conn
        if conn is not None and not conn.raw.closed and not conn.raw.broken:
            return
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.raw.close()
            log.warning("state.reconnecting", database=self._location)
        self._conn = None
        wait = self._next_attempt - self._monotonic()
        if wait > 0:
            raise psycopg.OperationalError(
                f"not connected; the next attempt to reach {self._location} is in {wait:.1f}s"
            )
        try:
            self._conn = self._opener()
        except psycopg.Error:
            self._next_attempt = self._monotonic() + RECONNECT_PAUSE
            raise

    @contextlib.contextmanager
    def transaction(self, *, rollback: bool = False) -> Iterator[PgConnection]:
        conn = self.db
        with conn.raw.transaction() as tx:
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            yield conn
            if rollback or self._discard:
                raise psycopg.Rollback(tx)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.raw.close()
            self._conn = None


# --- schema -----------------------------------------------------------------------------------

# The SQLite schema at version 5, in PostgreSQL's types. Versions before 5 never existed on
# PostgreSQL; later versions add numbered steps here and in state/schema.py alike.
_V5 = (
    """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sources (
    source           TEXT PRIMARY KEY,
    checkpoint_ms    BIGINT,
    last_success_ms  BIGINT,
    last_strategy    TEXT NOT NULL DEFAULT '',
    last_api_calls   INTEGER NOT NULL DEFAULT 0,
    failing_since_ms BIGINT,
    last_error       TEXT
);
CREATE TABLE tasks (
    source        TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    phase         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    received_ms   BIGINT NOT NULL,
    finished_ms   BIGINT,
    products      TEXT NOT NULL,
    uri           TEXT,
    attributes    TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (source, task_id)
);
CREATE INDEX tasks_by_phase ON tasks (source, phase, received_ms);
CREATE INDEX tasks_by_received ON tasks (source, received_ms);
CREATE INDEX tasks_by_status ON tasks (source, status);
CREATE TABLE journal (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    old_status  TEXT,
    new_status  TEXT,
    observed_ms BIGINT NOT NULL,
    baseline    INTEGER NOT NULL
);
CREATE INDEX journal_by_task ON journal (source, task_id);
CREATE INDEX journal_by_time ON journal (source, observed_ms);
CREATE TABLE alerts (
    key        TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    rule       TEXT NOT NULL,
    state      TEXT NOT NULL,
    one_shot   INTEGER NOT NULL,
    payload    TEXT NOT NULL,
    outcome    TEXT NOT NULL DEFAULT '',
    starts_ms  BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE INDEX alerts_active ON alerts (source, state, one_shot);
CREATE INDEX alerts_by_update ON alerts (updated_ms);
CREATE TABLE groups (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receiver      TEXT NOT NULL,
    group_key     TEXT NOT NULL UNIQUE,
    labels        TEXT NOT NULL,
    wait_ms       BIGINT NOT NULL,
    interval_ms   BIGINT NOT NULL,
    repeat_ms     BIGINT NOT NULL,
    send_resolved INTEGER NOT NULL,
    created_ms    BIGINT NOT NULL,
    last_flush_ms BIGINT,
    last_sent_ms  BIGINT,
    messages      INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    group_id  BIGINT NOT NULL,
    alert_key TEXT NOT NULL,
    notified  TEXT NOT NULL DEFAULT '',
    inhibited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, alert_key)
);
CREATE INDEX members_by_alert ON members (alert_key);
CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    receiver        TEXT NOT NULL,
    thread_key      TEXT,
    payload         TEXT NOT NULL,
    created_ms      BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT,
    done_ms         BIGINT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE INDEX outbox_fifo ON outbox (state, receiver, id);
CREATE TABLE threads (
    thread_key TEXT PRIMARY KEY,
    receiver   TEXT NOT NULL,
    ref        TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);
CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    matchers   TEXT NOT NULL,
    starts_ms  BIGINT NOT NULL,
    ends_ms    BIGINT NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    origin     TEXT NOT NULL
);
"""
    + LEASES
)

MIGRATIONS: dict[int, str] = {5: _V5}
"""MIGRATIONS[n] takes a database from the version before it to n (5 from an empty one)."""


def schema_version(conn: PgConnection) -> int:
    """0 for a database without our tables."""
    found = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
    if not found:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: PgConnection) -> list[int]:
    """Bring the database to `SCHEMA_VERSION`, one transaction per step, under the writer
    lock (two `taskwarden migrate` at once run one after the other); the steps applied."""
    applied: list[int] = []
    while True:
        with conn.raw.transaction():
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITER_LOCK,))
            current = schema_version(conn)
            _refuse_newer(current)
            if current >= SCHEMA_VERSION:
                return applied
            step = min(v for v in MIGRATIONS if v > current)
            for statement in MIGRATIONS[step].split(";"):
                if statement.strip():
                    conn.raw.execute(statement.encode())
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(step),),
            )
        applied.append(step)


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the PostgreSQL state has schema version {version}, but this taskwarden "
            f"understands up to {SCHEMA_VERSION}; upgrade taskwarden"
        )


def describe(url: str) -> str:
    """The URL without credentials, for messages and `taskwarden state`."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    host = info.get("host") or "localhost"
    return f"postgresql://{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def open_postgres(
    url: str,
    *,
    password: str | None = None,
    redactor: Redactor | None = None,
    discard_writes: bool = False,
    apply_migrations: bool = False,
    application: str = "taskwarden",
) -> PostgresStateStore:
    """Connect and check the schema: a database at an older version is migrated only when
    ``apply_migrations`` (a replica never migrates a shared database on its own); a newer
    one is refused."""
    location = describe(url)
    try:
        first = connect(url, password, application=application)
        if apply_migrations:
            migrate(first)
        version = schema_version(first)
    except psycopg.Error as exc:
        raise translate(exc, location) from exc
    if version == 0 and not apply_migrations:
        first.raw.close()
        raise StateMissingError(
            f"{location} has no taskwarden schema yet: run `taskwarden migrate` (or set "
            "state.migrate: true on one replica)"
        )
    try:
        _refuse_newer(version)
    except SchemaTooNewError:
        first.raw.close()
        raise
    if version < SCHEMA_VERSION:
        first.raw.close()
        raise SchemaOutdatedError(
            f"{location} has schema version {version}; this taskwarden needs "
            f"{SCHEMA_VERSION}: run `taskwarden migrate`"
        )
    return PostgresStateStore(
        functools.partial(connect, url, password, application=application),
        location,
        redactor=redactor,
        discard_writes=discard_writes,
        connection=first,
    )
