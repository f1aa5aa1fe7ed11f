"""Price ticks into 1-minute bars (pure: no I/O, no clock of its own).

The bar of minute M of an epic is made of the mid prices, (bid + offer) / 2, of the ticks
whose timestamp falls in [M, M + 1 min):

- open = the earliest tick's mid, high / low = the extremes, close = the LATEST tick's
  mid (by timestamp: the last price of the minute, not a mean), volume = the tick count.
- A minute without a tick has no bar: nothing is forward-filled across a gap.
- A tick with a side missing (bid or offer None) has no mid; it is counted `unpriced`
  and left out.
- A duplicate (same epic, timestamp, bid and offer as a tick already taken) is dropped
  and counted `duplicates` (a Lightstreamer snapshot after a reconnect resends ticks).
- Out of order (older than the newest tick already seen of its epic): placed into its
  minute if that minute is still open (counted `reordered`; it may become the open, never
  the close, since a later tick exists), dropped and counted `late` if its minute has
  already closed. A closed bar never changes.
- A minute closes ("final") when a tick of a later minute arrives for the same epic
  (`add` returns it), or when the caller's clock passes M + 1 min + grace
  (`close_due(now)`). The minute still open when a caller stops is not a bar (`open_bars`
  shows it); `flush()` closes it on purpose.

`bars_frame` turns closed bars into the project's bar frame (core/bars.py): tz-aware UTC
index of minute starts, `symbol` = epic, volume = tick count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pandas as pd

from trading_assets.core.bars import empty_bars, normalise_bars

MINUTE = timedelta(minutes=1)
DEFAULT_GRACE = timedelta(seconds=2)


class MinuteBar(NamedTuple):
    """A closed 1-minute bar of one epic (`minute` is its start, UTC)."""

    epic: str
    minute: datetime
    open: float
    high: float
    low: float
    close: float
    ticks: int


def minute_of(ts: datetime) -> datetime:
    """The start of the minute holding `ts`, in UTC (naive times are refused)."""
    if ts.tzinfo is None:
        raise ValueError(f"tick time {ts!r} is naive; ticks carry UTC times")
    ts = ts.astimezone(UTC)
    return ts.replace(second=0, microsecond=0)


def mid(bid: float | None, offer: float | None) -> float | None:
    if bid is None or offer is None:
        return None
    return (float(bid) + float(offer)) / 2.0


@dataclass
class _Open:
    minute: datetime
    first_ts: datetime
    last_ts: datetime
    open: float
    high: float
    low: float
    close: float
    ticks: int

    def bar(self, epic: str) -> MinuteBar:
        return MinuteBar(epic, self.minute, self.open, self.high, self.low, self.close, self.ticks)


@dataclass
class BuilderStats:
    taken: int = 0
    duplicates: int = 0
    reordered: int = 0
    late: int = 0
    unpriced: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class MinuteBarBuilder:
    """Feed ticks (anything with epic, timestamp, bid, offer) in arrival order; collect the
    bars that close. One open minute per epic (ticks are near in time)."""

    grace: timedelta = DEFAULT_GRACE
    remember: int = 4096  # recent tick keys kept to recognise duplicates
    stats: BuilderStats = field(default_factory=BuilderStats)

    def __post_init__(self) -> None:
        self._open: dict[str, _Open] = {}
        self._newest: dict[str, datetime] = {}
        self._closed_until: dict[str, datetime] = {}  # end of the last closed minute
        self._seen: set[tuple[Any, ...]] = set()
        self._order: deque[tuple[Any, ...]] = deque()

    def _remember(self, key: tuple[Any, ...]) -> bool:
        """False if `key` was seen already."""
        if key in self._seen:
            return False
        self._seen.add(key)
        self._order.append(key)
        if len(self._order) > self.remember:
            self._seen.discard(self._order.popleft())
        return True

    def add(self, tick: Any) -> list[MinuteBar]:
        """Take one tick; return the bars it closes (its epic's earlier open minute)."""
        epic, ts, bid, offer = tick.epic, tick.timestamp, tick.bid, tick.offer
        minute = minute_of(ts)
        ts = ts.astimezone(UTC)
        if not self._remember((epic, ts, bid, offer)):
            self.stats.duplicates += 1
            return []
        price = mid(bid, offer)
        if price is None:
            self.stats.unpriced += 1
            return []
        closed_until = self._closed_until.get(epic)
        if closed_until is not None and ts < closed_until:
            self.stats.late += 1
            return []
        out: list[MinuteBar] = []
        cur = self._open.get(epic)
        if cur is not None and minute > cur.minute:
            out.append(self._close(epic))
            cur = None
        newest = self._newest.get(epic)
        if newest is not None and ts < newest:
            self.stats.reordered += 1
        if cur is None:
            self._open[epic] = _Open(minute, ts, ts, price, price, price, price, 1)
        else:
            cur.ticks += 1
            cur.high, cur.low = max(cur.high, price), min(cur.low, price)
            if ts < cur.first_ts:
                cur.first_ts, cur.open = ts, price
            if ts >= cur.last_ts:
                cur.last_ts, cur.close = ts, price
        self._newest[epic] = max(ts, newest) if newest is not None else ts
        self.stats.taken += 1
        return out

    def _close(self, epic: str) -> MinuteBar:
        cur = self._open.pop(epic)
        self._closed_until[epic] = cur.minute + MINUTE
        return cur.bar(epic)

    def close_due(self, now: datetime) -> list[MinuteBar]:
        """Close every open minute M with M + 1 min + grace <= `now` (the wall or replay clock)."""
        due = [e for e, cur in self._open.items() if cur.minute + MINUTE + self.grace <= now]
        return [self._close(e) for e in due]

    def flush(self) -> list[MinuteBar]:
        """Close every open minute now, complete or not (end of a batch of ticks)."""
        return [self._close(e) for e in list(self._open)]

    def open_bars(self) -> list[MinuteBar]:
        """The minutes still open (not final), as they stand."""
        return [cur.bar(e) for e, cur in self._open.items()]


def minute_bars(ticks: Iterable[Any], grace: timedelta = DEFAULT_GRACE) -> pd.DataFrame:
    """All the bars of a finished batch of ticks (every minute closed at the end)."""
    builder = MinuteBarBuilder(grace=grace)
    bars: list[MinuteBar] = []
    for tick in ticks:
        bars.extend(builder.add(tick))
    bars.extend(builder.flush())
    return bars_frame(bars)


def bars_frame(bars: Iterable[MinuteBar]) -> pd.DataFrame:
    """Closed minute bars as a bar frame (core/bars.py schema; volume = tick count)."""
    rows = list(bars)
    if not rows:
        return empty_bars()
    frame = pd.DataFrame(
        {"symbol": [b.epic for b in rows], "open": [b.open for b in rows], "high": [b.high for b in rows],
         "low": [b.low for b in rows], "close": [b.close for b in rows],
         "volume": [float(b.ticks) for b in rows]},
        index=pd.DatetimeIndex([pd.Timestamp(b.minute) for b in rows], name="timestamp"),
    )
    return normalise_bars(frame)
