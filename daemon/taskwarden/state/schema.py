"""The state file's schema, versioned; each migration is explicit and runs in order."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3

SCHEMA_VERSION = 5

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE sources (
    source          TEXT PRIMARY KEY,
    checkpoint_ms   INTEGER,
    last_success_ms INTEGER,
    last_strategy   TEXT NOT NULL DEFAULT '',
    last_api_calls  INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE tasks (
    source        TEXT NOT NULL,
    task_id       TEXT NOT NULL,
    status        TEXT NOT NULL,
    phase         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    received_ms   INTEGER NOT NULL,
    finished_ms   INTEGER,
    products      TEXT NOT NULL,
    uri           TEXT,
    attributes    TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (source, task_id)
) WITHOUT ROWID;
CREATE INDEX tasks_by_phase ON tasks (source, phase, received_ms);
CREATE INDEX tasks_by_received ON tasks (source, received_ms);
CREATE TABLE journal (
    id          INTEGER PRIMARY KEY,
    source      TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    old_status  TEXT,
    new_status  TEXT,
    observed_ms INTEGER NOT NULL,
    baseline    INTEGER NOT NULL
);
CREATE INDEX journal_by_task ON journal (source, task_id);
CREATE INDEX journal_by_time ON journal (source, observed_ms);
"""

_V2_ALERTING = """
ALTER TABLE sources ADD COLUMN failing_since_ms INTEGER;
ALTER TABLE sources ADD COLUMN last_error TEXT;
CREATE TABLE alerts (
    key        TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    rule       TEXT NOT NULL,
    state      TEXT NOT NULL,
    one_shot   INTEGER NOT NULL,
    payload    TEXT NOT NULL,
    outcome    TEXT NOT NULL DEFAULT '',
    starts_ms  INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX alerts_active ON alerts (source, state, one_shot);
CREATE INDEX alerts_by_update ON alerts (updated_ms);
CREATE TABLE groups (
    id             INTEGER PRIMARY KEY,
    receiver       TEXT NOT NULL,
    group_key      TEXT NOT NULL UNIQUE,
    labels         TEXT NOT NULL,
    wait_ms        INTEGER NOT NULL,
    interval_ms    INTEGER NOT NULL,
    repeat_ms      INTEGER NOT NULL,
    send_resolved  INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    last_flush_ms  INTEGER,
    last_sent_ms   INTEGER,
    messages       INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE members (
    group_id  INTEGER NOT NULL,
    alert_key TEXT NOT NULL,
    notified  TEXT NOT NULL DEFAULT '',
    inhibited INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, alert_key)
) WITHOUT ROWID;
CREATE INDEX members_by_alert ON members (alert_key);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    receiver        TEXT NOT NULL,
    group_id        INTEGER,
    payload         TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL DEFAULT 'pending',
    last_error      TEXT,
    done_ms         INTEGER
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_ms);
CREATE TABLE threads (
    group_id   INTEGER PRIMARY KEY,
    receiver   TEXT NOT NULL,
    ref        TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE silences (
    id         TEXT PRIMARY KEY,
    matchers   TEXT NOT NULL,
    starts_ms  INTEGER NOT NULL,
    ends_ms    INTEGER NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL DEFAULT '',
    origin     TEXT NOT NULL
) WITHOUT ROWID;
"""

# Counting tasks by status (the taskwarden_tasks metric, `taskwarden state`) reads this
# covering index instead of every row: 55 → 7 ms at 100,000 tasks.
_V3_STATUS_INDEX = """
CREATE INDEX tasks_by_status ON tasks (source, status);
"""

# Threads keyed by something never reused. A group's row id was reused once the group
# emptied (INTEGER PRIMARY KEY without AUTOINCREMENT) and the thread of the old group was
# found by the new one: follow-ups went into an unrelated message's thread. Groups now
# never reuse an id (AUTOINCREMENT, its counter above every id used so far); a thread is
# keyed by "<group key>#<group id>", and an outbox entry carries the key of its group (the
# group may be gone by the time the entry is sent). Old thread rows are kept only where
# their group provably still is the one they were made for. The outbox gets the index of
# its per-receiver FIFO.
_V4_THREADS = """
CREATE TABLE groups_v4 (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    receiver       TEXT NOT NULL,
    group_key      TEXT NOT NULL UNIQUE,
    labels         TEXT NOT NULL,
    wait_ms        INTEGER NOT NULL,
    interval_ms    INTEGER NOT NULL,
    repeat_ms      INTEGER NOT NULL,
    send_resolved  INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    last_flush_ms  INTEGER,
    last_sent_ms   INTEGER,
    messages       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO groups_v4 SELECT id, receiver, group_key, labels, wait_ms, interval_ms, repeat_ms,
    send_resolved, created_ms, last_flush_ms, last_sent_ms, messages FROM groups;
DELETE FROM sqlite_sequence WHERE name = 'groups_v4';
INSERT INTO sqlite_sequence (name, seq) SELECT 'groups_v4', MAX(COALESCE(m, 0)) FROM (
    SELECT MAX(id) AS m FROM groups UNION ALL SELECT MAX(group_id) FROM threads
    UNION ALL SELECT MAX(group_id) FROM outbox);
CREATE TABLE threads_v4 (
    thread_key TEXT PRIMARY KEY,
    receiver   TEXT NOT NULL,
    ref        TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO threads_v4
    SELECT g.group_key || '#' || t.group_id, t.receiver, t.ref, t.updated_ms
    FROM threads t JOIN groups g ON g.id = t.group_id AND t.updated_ms >= g.created_ms;
INSERT OR IGNORE INTO threads_v4
    SELECT json_extract(o.payload, '$.groupKey') || '#' || t.group_id, t.receiver, t.ref,
        t.updated_ms
    FROM threads t JOIN outbox o ON o.group_id = t.group_id AND o.state = 'pending'
    WHERE t.group_id NOT IN (SELECT id FROM groups) AND o.created_ms >= t.updated_ms;
DROP TABLE threads;
ALTER TABLE threads_v4 RENAME TO threads;
ALTER TABLE outbox ADD COLUMN thread_key TEXT;
UPDATE outbox SET thread_key = json_extract(payload, '$.groupKey') || '#' || group_id
    WHERE group_id IS NOT NULL;
ALTER TABLE outbox DROP COLUMN group_id;
CREATE INDEX outbox_fifo ON outbox (state, receiver, id);
DROP TABLE groups;
ALTER TABLE groups_v4 RENAME TO groups;
"""

# Leases: who polls which source and delivers which receiver's outbox (a replica each, on a
# shared PostgreSQL; always this process on SQLite, whose file lock makes it the only one).
# The epoch only grows: a cycle's commit checks it, so a replica that lost its lease can
# never commit a stale cycle. Replicas mark themselves alive when they claim.
LEASES = """
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT,
    epoch       BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    acquired_ms BIGINT NOT NULL
);
CREATE TABLE replicas (
    owner      TEXT PRIMARY KEY,
    seen_ms    BIGINT NOT NULL,
    started_ms BIGINT NOT NULL
);
"""

MIGRATIONS: dict[int, str] = {
    1: _V1,
    2: _V2_ALERTING,
    3: _V3_STATUS_INDEX,
    4: _V4_THREADS,
    5: LEASES,
}
"""MIGRATIONS[n] takes a file from version n-1 to version n."""


def migrate(conn: sqlite3.Connection, current: int) -> None:
    """Bring a file at ``current`` to `SCHEMA_VERSION`, one transaction per step.

    ``conn`` is in autocommit mode; each step is wrapped in BEGIN/COMMIT so that a crash
    mid-migration leaves the file at the previous version.
    """
    for version in range(current + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
