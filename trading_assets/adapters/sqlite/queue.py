"""The local alert queue: one SQLite file with the semantics of an SQS FIFO queue (see
`core.messaging`), safe for several processes (the gateway puts, a worker and a sensor
receive).

- Dedupe is forever: every alert id ever put stays in `alert_seen` (SQS dedupes only
  for 5 minutes; the SQS adapter adds a DynamoDB record to match this).
- A put commits with `synchronous=FULL`, so "accepted" survives a power cut too, not only
  a crash of the process.
- A receive claims its alerts inside one write-locking transaction (`BEGIN IMMEDIATE`):
  two consumers, in any processes, never hold the same alert at once.
- An alert is in flight while `visible_at` is in the future; a group with an alert in
  flight is blocked. Times are wall-clock (`time.time()`), shared by every process.
- An alert already received `max_receives` times moves to `alert_dead` at the next
  receive instead of being delivered (as SQS's redrive policy does).
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.messaging import QueuedAlert, check_put, check_receive, check_release

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_seen (
    alert_id TEXT PRIMARY KEY,
    grp TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    grp TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    visible_at REAL NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
);
CREATE INDEX IF NOT EXISTS alert_queue_by_group ON alert_queue (grp, visible_at);
CREATE TABLE IF NOT EXISTS alert_dead (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL UNIQUE,
    grp TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at REAL NOT NULL
)
"""

# The visible alerts of groups with nothing in flight, oldest first.
_DELIVERABLE = """
SELECT seq, alert_id, grp, body, sent_at, receive_count FROM alert_queue AS q
WHERE q.visible_at <= :now
  AND NOT EXISTS (SELECT 1 FROM alert_queue AS f WHERE f.grp = q.grp AND f.visible_at > :now)
ORDER BY seq LIMIT :limit
"""

_POLL_SECONDS = 0.05


def _time(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class SqliteAlertQueue:
    """`core.messaging.AlertQueue` in a SQLite file (WAL)."""

    def __init__(self, path: str | Path, visibility_timeout_seconds: float = 30,
                 max_receives: int = 5) -> None:
        if visibility_timeout_seconds <= 0:
            raise ValueError(f"visibility_timeout_seconds must be > 0, got {visibility_timeout_seconds!r}")
        if max_receives < 1:
            raise ValueError(f"max_receives must be >= 1, got {max_receives!r}")
        self.path = Path(path)
        self.visibility_timeout_seconds = float(visibility_timeout_seconds)
        self.max_receives = int(max_receives)
        ensure_schema(self.path, _SCHEMA)

    def __repr__(self) -> str:
        return (f"SqliteAlertQueue({str(self.path)!r}, visibility_timeout_seconds="
                f"{self.visibility_timeout_seconds:g}, max_receives={self.max_receives})")

    def _ready(self) -> None:
        ensure_schema(self.path, _SCHEMA)  # cheap after the first call; recreates a deleted file

    # ------------------------------------------------------------------ producer

    def put(self, alert_id: str, body: str, group: str) -> bool:
        check_put(alert_id, body, group)
        self._ready()
        now = time.time()
        with transaction(self.path, durable=True) as conn:
            seen = conn.execute("INSERT OR IGNORE INTO alert_seen (alert_id, grp, received_at) VALUES (?, ?, ?)",
                                (alert_id, group, now))
            if seen.rowcount == 0:
                return False
            conn.execute("INSERT INTO alert_queue (alert_id, grp, body, sent_at) VALUES (?, ?, ?, ?)",
                         (alert_id, group, body, now))
        return True

    # ------------------------------------------------------------------ consumer

    def receive(self, max_messages: int = 1, wait_seconds: float = 0) -> list[QueuedAlert]:
        check_receive(max_messages, wait_seconds)
        self._ready()
        deadline = time.monotonic() + wait_seconds
        while True:
            if self._anything_deliverable():
                got = self._claim(max_messages)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(_POLL_SECONDS, remaining))

    def _anything_deliverable(self) -> bool:
        """A read without the write lock, so idle polling does not hold up producers."""
        with reading(self.path) as conn:
            return conn.execute(f"SELECT EXISTS ({_DELIVERABLE})", {"now": time.time(), "limit": 1}).fetchone()[0] == 1

    def _claim(self, max_messages: int) -> list[QueuedAlert]:
        claimed: list[QueuedAlert] = []
        with transaction(self.path, durable=True) as conn:
            now = time.time()
            # dead ones are moved on the way, so look a little further than max_messages
            rows = conn.execute(_DELIVERABLE, {"now": now, "limit": max_messages + 100}).fetchall()
            for row in rows:
                if len(claimed) >= max_messages:
                    break
                if row["receive_count"] >= self.max_receives:
                    conn.execute(
                        "INSERT OR REPLACE INTO alert_dead (seq, alert_id, grp, body, sent_at, receive_count, dead_at)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (row["seq"], row["alert_id"], row["grp"], row["body"], row["sent_at"],
                         row["receive_count"], now))
                    conn.execute("DELETE FROM alert_queue WHERE seq = ?", (row["seq"],))
                    continue
                receipt = f"{row['seq']}:{uuid.uuid4().hex}"
                conn.execute("UPDATE alert_queue SET visible_at = ?, receive_count = receive_count + 1, "
                             "receipt = ? WHERE seq = ?",
                             (now + self.visibility_timeout_seconds, receipt, row["seq"]))
                claimed.append(QueuedAlert(alert_id=row["alert_id"], body=row["body"], group=row["grp"],
                                           receive_count=row["receive_count"] + 1, receipt=receipt,
                                           sent_at=_time(row["sent_at"])))
        return claimed

    def ack(self, msg: QueuedAlert) -> None:
        """Deletes the alert if `msg` is still its latest delivery; an ack of a delivery
        that timed out and went to another consumer is ignored (that consumer owns it)."""
        self._ready()
        with transaction(self.path, durable=True) as conn:
            conn.execute("DELETE FROM alert_queue WHERE alert_id = ? AND receipt = ?", (msg.alert_id, msg.receipt))

    def release(self, msg: QueuedAlert, delay_seconds: int = 0) -> None:
        check_release(delay_seconds)
        self._ready()
        with transaction(self.path, durable=True) as conn:
            conn.execute("UPDATE alert_queue SET visible_at = ? WHERE alert_id = ? AND receipt = ?",
                         (time.time() + delay_seconds, msg.alert_id, msg.receipt))

    # ------------------------------------------------------------------ inspection

    def dead_letters(self, limit: int = 100) -> list[QueuedAlert]:
        self._ready()
        with reading(self.path) as conn:
            rows = conn.execute("SELECT alert_id, grp, body, sent_at, receive_count FROM alert_dead "
                                "ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [QueuedAlert(alert_id=r["alert_id"], body=r["body"], group=r["grp"],
                            receive_count=r["receive_count"], sent_at=_time(r["sent_at"])) for r in rows]

    def depth(self) -> int:
        self._ready()
        with reading(self.path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM alert_queue").fetchone()[0])
