"""The alerting tables: alerts, notification groups, the outbox, Slack threads, silences.

Functions of an open connection, called inside the store's transactions so that an alert,
its group membership and the outbox entry it causes are written together with the poll
that caused them.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from taskwarden.alerts import (
    AlertState,
    decode_alert,
    decode_notification,
    encode_alert,
    encode_notification,
)
from taskwarden.delivery import OutboxItem
from taskwarden.matchers import parse_all
from taskwarden.routing import GroupState, Member, Silence, Silences, Timing, plan_flush
from taskwarden.state.decoding import decoding
from taskwarden.timeutil import from_epoch_ms, to_epoch_ms

if TYPE_CHECKING:
    from collections.abc import Container, Sequence
    from datetime import datetime

    from taskwarden.alerts import Alert, Notification
    from taskwarden.routing import AlertBatch, Destination
    from taskwarden.state.sqlstore import Connection, Row


def _ms(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def active_alerts(conn: Connection, source: str) -> dict[str, Alert]:
    rows = conn.execute(
        "SELECT payload FROM alerts WHERE source = ? AND state = 'firing' AND one_shot = 0",
        (source,),
    ).fetchall()
    with decoding("alert"):
        alerts = [decode_alert(r[0]) for r in rows]
    return {a.key: a for a in alerts}


def apply_alerts(conn: Connection, batch: AlertBatch, now: datetime) -> None:
    now_ms = to_epoch_ms(now)
    for routed in batch.fired:
        alert = routed.alert
        row = conn.execute("SELECT state FROM alerts WHERE key = ?", (alert.key,)).fetchone()
        if row is not None and (alert.one_shot or row[0] == AlertState.FIRING.value):
            if not alert.one_shot:
                # Still firing: refresh what a repeat will show, tell nobody anew.
                conn.execute(
                    "UPDATE alerts SET payload = ?, updated_ms = ? WHERE key = ?",
                    (encode_alert(alert), now_ms, alert.key),
                )
            continue
        conn.execute(
            "INSERT INTO alerts (key, source, rule, state, one_shot, payload, outcome, "
            "starts_ms, updated_ms) VALUES (?, ?, ?, 'firing', ?, ?, '', ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET state = 'firing', payload = excluded.payload, "
            "outcome = '', starts_ms = excluded.starts_ms, updated_ms = excluded.updated_ms",
            (
                alert.key,
                alert.source,
                alert.rule,
                int(alert.one_shot),
                encode_alert(alert),
                to_epoch_ms(alert.starts_at or now),
                now_ms,
            ),
        )
        for destination in routed.destinations:
            group_id = _ensure_group(conn, destination, now_ms)
            conn.execute(
                "INSERT INTO members (group_id, alert_key, notified, inhibited) "
                "VALUES (?, ?, '', ?) ON CONFLICT DO NOTHING",
                (group_id, alert.key, int(routed.inhibited)),
            )
        if not routed.destinations:
            conn.execute("UPDATE alerts SET outcome = 'unrouted' WHERE key = ?", (alert.key,))
    for alert in batch.resolved:
        conn.execute(
            "UPDATE alerts SET state = 'resolved', payload = ?, updated_ms = ? WHERE key = ?",
            (encode_alert(alert), now_ms, alert.key),
        )


def _ensure_group(conn: Connection, destination: Destination, now_ms: int) -> int:
    row = conn.execute(
        "SELECT id FROM groups WHERE group_key = ?", (destination.group_key,)
    ).fetchone()
    if row is not None:
        return int(row[0])
    t = destination.timing
    row = conn.execute(
        "INSERT INTO groups (receiver, group_key, labels, wait_ms, interval_ms, repeat_ms, "
        "send_resolved, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            destination.receiver,
            destination.group_key,
            json.dumps(destination.group_labels, separators=(",", ":")),
            _ms(t.group_wait),
            _ms(t.group_interval),
            _ms(t.repeat_interval),
            int(t.send_resolved),
            now_ms,
        ),
    ).fetchone()
    return int(row[0])


def _group_from(row: Row) -> GroupState:
    def opt(value: int | None) -> datetime | None:
        return None if value is None else from_epoch_ms(value)

    return GroupState(
        group_id=row["id"],
        receiver=row["receiver"],
        key=row["group_key"],
        labels=tuple((str(k), str(v)) for k, v in json.loads(row["labels"])),
        timing=Timing(
            group_wait=timedelta(milliseconds=row["wait_ms"]),
            group_interval=timedelta(milliseconds=row["interval_ms"]),
            repeat_interval=timedelta(milliseconds=row["repeat_ms"]),
            send_resolved=bool(row["send_resolved"]),
        ),
        created_at=from_epoch_ms(row["created_ms"]),
        last_flush=opt(row["last_flush_ms"]),
        last_sent=opt(row["last_sent_ms"]),
        messages=row["messages"],
    )


def flush(conn: Connection, now: datetime, *, force: bool = False) -> list[Notification]:
    """Turn every due group into at most one outbox entry."""
    now_ms = to_epoch_ms(now)
    muter = Silences([s for s in silences(conn) if s.is_active(now)])
    made: list[Notification] = []
    for row in conn.execute("SELECT * FROM groups ORDER BY id").fetchall():
        with decoding("notification group"):
            group = _group_from(row)
        if not force and not group.is_due(now):
            continue
        with decoding("alert"):
            members = [
                Member(decode_alert(m["payload"]), m["notified"], bool(m["inhibited"]))
                for m in conn.execute(
                    "SELECT a.payload, m.notified, m.inhibited FROM members m "
                    "JOIN alerts a ON a.key = m.alert_key WHERE m.group_id = ? "
                    "ORDER BY a.starts_ms, a.key",
                    (group.group_id,),
                )
            ]
        plan = plan_flush(group, members, muter, now)
        for key, notified in plan.notified.items():
            conn.execute(
                "UPDATE members SET notified = ? WHERE group_id = ? AND alert_key = ?",
                (notified, group.group_id, key),
            )
        for key, outcome in plan.removed.items():
            conn.execute(
                "DELETE FROM members WHERE group_id = ? AND alert_key = ?",
                (group.group_id, key),
            )
            conn.execute(
                "UPDATE alerts SET outcome = CASE WHEN outcome IN ('', 'dropped') THEN ? "
                "ELSE outcome END WHERE key = ?",
                (outcome, key),
            )
        sent = plan.notification is not None
        if plan.notification is not None:
            _insert_outbox(conn, plan.notification, group.thread_key, now_ms)
            made.append(plan.notification)
        remaining = conn.execute(
            "SELECT COUNT(*) FROM members WHERE group_id = ?", (group.group_id,)
        ).fetchone()[0]
        if remaining == 0 and not sent:
            # Emptied by a flush that told something, a group lives on until its next
            # group_interval: a failure that joins it meanwhile waits for that interval
            # (a trickle of failures is one message per interval, not one per failure).
            conn.execute("DELETE FROM groups WHERE id = ?", (group.group_id,))
        else:
            conn.execute(
                "UPDATE groups SET last_flush_ms = ?, "
                "last_sent_ms = CASE WHEN ? THEN ? ELSE last_sent_ms END, "
                "messages = messages + ? WHERE id = ?",
                (now_ms, sent, now_ms, int(sent), group.group_id),
            )
    return made


def _insert_outbox(
    conn: Connection, notification: Notification, thread_key: str | None, now_ms: int
) -> int:
    row = conn.execute(
        "INSERT INTO outbox (receiver, thread_key, payload, created_ms, next_attempt_ms) "
        "VALUES (?, ?, ?, ?, ?) RETURNING id",
        (notification.receiver, thread_key, encode_notification(notification), now_ms, now_ms),
    ).fetchone()
    return int(row[0])


def enqueue(conn: Connection, notification: Notification, now: datetime) -> int:
    return _insert_outbox(conn, notification, None, to_epoch_ms(now))


def due(
    conn: Connection,
    now: datetime,
    limit: int,
    per_receiver: int = 100,
    receivers: Container[str] | None = None,
) -> list[OutboxItem]:
    """Per receiver (of ``receivers``, or all), its pending entries in order, if its oldest
    is due: a receiver is a FIFO, and an entry waiting for a retry holds back the ones
    behind it."""
    now_ms = to_epoch_ms(now)
    heads = conn.execute(
        "SELECT o.receiver, o.next_attempt_ms FROM outbox o INDEXED BY outbox_fifo "
        "JOIN (SELECT receiver, MIN(id) AS head FROM outbox INDEXED BY outbox_fifo "
        "      WHERE state = 'pending' GROUP BY receiver) h ON o.id = h.head "
        "ORDER BY o.id"
    ).fetchall()
    rows: list[Row] = []
    for head in heads:
        if head["next_attempt_ms"] > now_ms or len(rows) >= limit:
            continue
        if receivers is not None and head["receiver"] not in receivers:
            continue
        rows.extend(
            conn.execute(
                "SELECT * FROM outbox INDEXED BY outbox_fifo "
                "WHERE state = 'pending' AND receiver = ? ORDER BY id LIMIT ?",
                (head["receiver"], min(per_receiver, limit - len(rows))),
            ).fetchall()
        )
    with decoding("notification"):
        return [
            OutboxItem(
                outbox_id=r["id"],
                receiver=r["receiver"],
                thread_key=r["thread_key"],
                notification=decode_notification(r["payload"]),
                created_at=from_epoch_ms(r["created_ms"]),
                attempts=r["attempts"],
            )
            for r in rows
        ]


def mark_sent(conn: Connection, item: OutboxItem, now: datetime, thread_ref: str | None) -> None:
    now_ms = to_epoch_ms(now)
    conn.execute(
        "UPDATE outbox SET state = 'sent', done_ms = ?, attempts = attempts + 1, "
        "last_error = NULL WHERE id = ?",
        (now_ms, item.outbox_id),
    )
    if thread_ref and item.thread_key is not None:
        # The first message of a group is its thread: later references never replace it.
        conn.execute(
            "INSERT INTO threads (thread_key, receiver, ref, updated_ms) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (thread_key) DO UPDATE SET updated_ms = excluded.updated_ms",
            (item.thread_key, item.receiver, thread_ref, now_ms),
        )


def mark_retry(conn: Connection, item: OutboxItem, next_attempt: datetime, error: str) -> None:
    conn.execute(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?, last_error = ? "
        "WHERE id = ?",
        (to_epoch_ms(next_attempt), error, item.outbox_id),
    )


def mark_dead(
    conn: Connection,
    item: OutboxItem,
    now: datetime,
    error: str,
    notice: AlertBatch | None = None,
) -> None:
    """Give the entry up and, in the same transaction, raise (and enqueue) the notice that
    says so."""
    conn.execute(
        "UPDATE outbox SET state = 'dead', done_ms = ?, attempts = attempts + 1, "
        "last_error = ? WHERE id = ?",
        (to_epoch_ms(now), error, item.outbox_id),
    )
    if notice is not None:
        apply_alerts(conn, notice, now)
        flush(conn, now)


def thread_ref(conn: Connection, thread_key: str) -> str | None:
    row = conn.execute("SELECT ref FROM threads WHERE thread_key = ?", (thread_key,)).fetchone()
    return None if row is None else str(row[0])


def outbox_depth(conn: Connection) -> tuple[int, datetime | None]:
    count, oldest = conn.execute(
        "SELECT COUNT(*), MIN(created_ms) FROM outbox WHERE state = 'pending'"
    ).fetchone()
    return int(count), None if oldest is None else from_epoch_ms(oldest)


def prune(conn: Connection, before: datetime) -> None:
    """Forget finished notifications, old threads, and alerts that nobody holds any more."""
    cutoff = to_epoch_ms(before)
    conn.execute("DELETE FROM outbox WHERE state != 'pending' AND done_ms < ?", (cutoff,))
    conn.execute("DELETE FROM threads WHERE updated_ms < ?", (cutoff,))
    conn.execute(
        "DELETE FROM alerts WHERE updated_ms < ? AND NOT (state = 'firing' AND one_shot = 0) "
        "AND key NOT IN (SELECT alert_key FROM members)",
        (cutoff,),
    )


# --- silences -----------------------------------------------------------------------------------


def silences(conn: Connection) -> list[Silence]:
    rows = conn.execute("SELECT * FROM silences ORDER BY starts_ms, id").fetchall()
    with decoding("silence"):
        return [_silence_from(r) for r in rows]


def _silence_from(row: Row) -> Silence:
    return Silence(
        silence_id=row["id"],
        matchers=parse_all(json.loads(row["matchers"])),
        starts_at=from_epoch_ms(row["starts_ms"]),
        ends_at=from_epoch_ms(row["ends_ms"]),
        comment=row["comment"],
        created_by=row["created_by"],
        origin=row["origin"],
    )


def _silence_row(silence: Silence) -> tuple[Any, ...]:
    return (
        silence.silence_id,
        json.dumps([str(m) for m in silence.matchers]),
        to_epoch_ms(silence.starts_at),
        to_epoch_ms(silence.ends_at),
        silence.comment,
        silence.created_by,
        silence.origin,
    )


def add_silence(conn: Connection, silence: Silence) -> None:
    conn.execute(
        "INSERT INTO silences (id, matchers, starts_ms, ends_ms, comment, created_by, origin) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET matchers = excluded.matchers, "
        "starts_ms = excluded.starts_ms, ends_ms = excluded.ends_ms, comment = excluded.comment, "
        "created_by = excluded.created_by, origin = excluded.origin",
        _silence_row(silence),
    )


def expire_silence(conn: Connection, silence_id: str, now: datetime) -> bool:
    cursor = conn.execute(
        "UPDATE silences SET ends_ms = CASE WHEN ends_ms < ? THEN ends_ms ELSE ? END WHERE id = ?",
        (to_epoch_ms(now), to_epoch_ms(now), silence_id),
    )
    return cursor.rowcount > 0


def sync_config_silences(conn: Connection, configured: Sequence[Silence]) -> None:
    conn.execute("DELETE FROM silences WHERE origin = 'config'")
    for silence in configured:
        add_silence(conn, silence)
