"""Durable storage of the price stream: raw ticks, closed 1-minute bars, a heartbeat.

Layout under `root` (the consumer passes `<TRADING_DATA_DIR>/stream`):

- `YYYY-MM-DD.sqlite`, one file per UTC day (the day of the tick or of the bar's minute),
  so a day is one file to copy, read or delete and a day's asset partition reads one file:
  - `ticks(epic, ts_us, bid, offer, received_us)`: unique on (epic, ts_us, bid, offer), so
    a tick resent after a reconnect is stored once;
  - `bars(epic, minute, open, high, low, close, ticks, written_at)`: primary key (epic,
    minute) and `INSERT OR IGNORE`: a bar is written once, the first version stays, and a
    restart or a reconnect never duplicates or rewrites it.
- `heartbeat.sqlite`: `epics(epic, last_tick_at, last_bar_minute, updated_at)` and one
  `connection` row (source, status, last connect / disconnect and why, reconnects, pid),
  what a Dagster sensor or check reads to tell a silent or dead stream.

Times are stored as ISO-8601 UTC text (bars, heartbeat) or epoch microseconds (ticks).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.minute_bars import MinuteBar

_DAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticks (
    epic TEXT NOT NULL, ts_us INTEGER NOT NULL, bid REAL, offer REAL, received_us INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS ticks_once ON ticks (epic, ts_us, IFNULL(bid, -1e300), IFNULL(offer, -1e300));
CREATE TABLE IF NOT EXISTS bars (
    epic TEXT NOT NULL, minute TEXT NOT NULL, open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL,
    close REAL NOT NULL, ticks INTEGER NOT NULL, written_at TEXT NOT NULL, PRIMARY KEY (epic, minute))
"""

_HEARTBEAT_SCHEMA = """
CREATE TABLE IF NOT EXISTS epics (
    epic TEXT PRIMARY KEY, last_tick_at TEXT, last_bar_minute TEXT, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS connection (
    id INTEGER PRIMARY KEY CHECK (id = 1), source TEXT, status TEXT NOT NULL, last_connect_at TEXT,
    last_disconnect_at TEXT, last_disconnect_reason TEXT, reconnects INTEGER NOT NULL DEFAULT 0,
    pid INTEGER, updated_at TEXT NOT NULL)
"""

_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.sqlite$")


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def _us(ts: datetime) -> int:
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def _parse(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


@dataclass(frozen=True)
class Heartbeat:
    """What the stream last did: per epic its last tick and bar; the connection's state."""

    last_tick_at: dict[str, datetime]
    last_bar_minute: dict[str, datetime]
    source: str | None
    status: str
    last_connect_at: datetime | None
    last_disconnect_at: datetime | None
    last_disconnect_reason: str | None
    reconnects: int
    updated_at: datetime | None

    def silent_for(self, now: datetime) -> float | None:
        """Seconds since the newest tick of any epic (None: never a tick)."""
        if not self.last_tick_at:
            return None
        return (now - max(self.last_tick_at.values())).total_seconds()


class StreamStore:
    """Ticks, bars and heartbeat of the price stream under `root` (see module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def day_path(self, day: date) -> Path:
        return self.root / f"{day.isoformat()}.sqlite"

    @property
    def heartbeat_path(self) -> Path:
        return self.root / "heartbeat.sqlite"

    def _day(self, day: date) -> Path:
        path = self.day_path(day)
        ensure_schema(path, _DAY_SCHEMA)
        return path

    def days(self) -> list[date]:
        """The UTC days with a file, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(date.fromisoformat(m.group(1)) for p in self.root.iterdir()
                      if (m := _DAY_FILE.match(p.name)))

    # ------------------------------------------------------------------ writes

    def write_ticks(self, ticks: Iterable[Any], received_at: datetime | None = None) -> int:
        """Store raw ticks (epic, timestamp, bid, offer); returns how many were new."""
        received = _us(received_at or datetime.now(UTC))
        by_day: dict[date, list[tuple[Any, ...]]] = {}
        for t in ticks:
            ts = t.timestamp.astimezone(UTC)
            by_day.setdefault(ts.date(), []).append((t.epic, _us(ts), t.bid, t.offer, received))
        new = 0
        for day, rows in by_day.items():
            with transaction(self._day(day)) as conn:
                before = conn.total_changes
                conn.executemany("INSERT OR IGNORE INTO ticks VALUES (?, ?, ?, ?, ?)", rows)
                new += conn.total_changes - before
        return new

    def write_bars(self, bars: Iterable[MinuteBar], written_at: datetime | None = None) -> list[MinuteBar]:
        """Store closed bars once each; returns those that were new (not already stored)."""
        stamp = _iso(written_at or datetime.now(UTC))
        by_day: dict[date, list[MinuteBar]] = {}
        for b in bars:
            by_day.setdefault(b.minute.astimezone(UTC).date(), []).append(b)
        new: list[MinuteBar] = []
        for day, rows in by_day.items():
            with transaction(self._day(day)) as conn:
                for b in rows:
                    cur = conn.execute("INSERT OR IGNORE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                       (b.epic, _iso(b.minute), b.open, b.high, b.low, b.close, b.ticks, stamp))
                    if cur.rowcount:
                        new.append(b)
        if new:
            self._note_bars(new)
        return new

    def _beat(self) -> Path:
        ensure_schema(self.heartbeat_path, _HEARTBEAT_SCHEMA)
        return self.heartbeat_path

    def _note_bars(self, bars: Sequence[MinuteBar]) -> None:
        last: dict[str, datetime] = {}
        for b in bars:
            last[b.epic] = max(b.minute, last.get(b.epic, b.minute))
        now = _iso(datetime.now(UTC))
        with transaction(self._beat()) as conn:
            for epic, minute in last.items():
                conn.execute("INSERT INTO epics (epic, last_bar_minute, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (epic) DO UPDATE SET last_bar_minute = MAX(IFNULL(last_bar_minute, ''), "
                             "excluded.last_bar_minute), updated_at = excluded.updated_at", (epic, _iso(minute), now))

    def beat(self, last_tick_at: dict[str, datetime]) -> None:
        """Record the newest tick time per epic."""
        if not last_tick_at:
            return
        now = _iso(datetime.now(UTC))
        with transaction(self._beat()) as conn:
            for epic, ts in last_tick_at.items():
                conn.execute("INSERT INTO epics (epic, last_tick_at, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (epic) DO UPDATE SET last_tick_at = MAX(IFNULL(last_tick_at, ''), "
                             "excluded.last_tick_at), updated_at = excluded.updated_at", (epic, _iso(ts), now))

    def record_connection(self, status: str, source: str | None = None, reason: str | None = None,
                          at: datetime | None = None) -> None:
        """`status` "connected" (a (re)connect: counted after the first) or "disconnected"
        / "stopped" (with `reason`)."""
        when = _iso(at or datetime.now(UTC))
        with transaction(self._beat()) as conn:
            row = conn.execute("SELECT last_connect_at, reconnects FROM connection WHERE id = 1").fetchone()
            if row is None:
                conn.execute("INSERT INTO connection (id, status, updated_at) VALUES (1, ?, ?)", (status, when))
                row = (None, 0)
            if status == "connected":
                conn.execute("UPDATE connection SET status = ?, source = IFNULL(?, source), last_connect_at = ?, "
                             "reconnects = ?, pid = ?, updated_at = ? WHERE id = 1",
                             (status, source, when, row[1] + (1 if row[0] else 0), os.getpid(), when))
            else:
                conn.execute("UPDATE connection SET status = ?, last_disconnect_at = ?, last_disconnect_reason = ?, "
                             "updated_at = ? WHERE id = 1", (status, when, reason, when))

    # ------------------------------------------------------------------ reads

    def bars(self, day: date, epics: Sequence[str] | None = None) -> pd.DataFrame:
        """The day's stored bars as a bar frame (volume = tick count)."""
        path = self.day_path(day)
        if not path.exists():
            return empty_bars()
        with reading(self._day(day)) as conn:
            rows = conn.execute("SELECT epic, minute, open, high, low, close, ticks FROM bars").fetchall()
        if epics is not None:
            rows = [r for r in rows if r[0] in set(epics)]
        if not rows:
            return empty_bars()
        frame = pd.DataFrame(
            {"symbol": [r[0] for r in rows], "open": [r[2] for r in rows], "high": [r[3] for r in rows],
             "low": [r[4] for r in rows], "close": [r[5] for r in rows], "volume": [float(r[6]) for r in rows]},
            index=pd.DatetimeIndex([pd.Timestamp(r[1]) for r in rows], name="timestamp"))
        return normalise_bars(frame)

    def ticks(self, day: date, epic: str | None = None) -> list[tuple[str, datetime, float | None, float | None]]:
        """The day's stored ticks (epic, timestamp, bid, offer), by epic and time."""
        if not self.day_path(day).exists():
            return []
        with reading(self._day(day)) as conn:
            rows = conn.execute("SELECT epic, ts_us, bid, offer FROM ticks ORDER BY epic, ts_us").fetchall()
        return [(r[0], _from_us(r[1]), r[2], r[3]) for r in rows if epic is None or r[0] == epic]

    def heartbeat(self) -> Heartbeat:
        if not self.heartbeat_path.exists():
            return Heartbeat({}, {}, None, "never started", None, None, None, 0, None)
        with reading(self._beat()) as conn:
            epics = conn.execute("SELECT epic, last_tick_at, last_bar_minute FROM epics").fetchall()
            c = conn.execute("SELECT source, status, last_connect_at, last_disconnect_at, last_disconnect_reason, "
                             "reconnects, updated_at FROM connection WHERE id = 1").fetchone()
        ticks = {r[0]: _parse(r[1]) for r in epics if r[1]}
        bars = {r[0]: _parse(r[2]) for r in epics if r[2]}
        if c is None:
            return Heartbeat(ticks, bars, None, "never connected", None, None, None, 0, None)  # type: ignore[arg-type]
        return Heartbeat(ticks, bars, c[0], c[1], _parse(c[2]), _parse(c[3]), c[4], int(c[5]),  # type: ignore[arg-type]
                         _parse(c[6]))
