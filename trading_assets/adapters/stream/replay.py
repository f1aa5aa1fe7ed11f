"""`ReplayPriceStream`: the offline `PriceStream`, ticks made from the bundled replay data.

For UTC day D it takes the replay FX hourly bars of each epic (adapters/replay,
`session="fx"`: the real EURUSD return tape) and draws a price path through each hour:
open at :00, then the bar's low and high (low first in a rising hour, high first in a
falling one), the close at :60, straight lines between them plus a small wiggle that is
zero at those points (seeded by epic and hour, so the same on every run and machine).
Each minute gets `ticks_per_minute` ticks, evenly spaced, the last one just before the
minute ends priced at the path's value at the minute's end: so each minute's last price
is the path at its end, and the last minute of an hour closes at the hour's close.
Bid and offer are the mid minus / plus half a fixed spread (0.6 pips of EURUSD, scaled
to the pair's level).

The stream runs on a replay clock: replay time = `start` + (wall time since subscribe) x
`speed`; a tick is sent when the replay clock reaches its timestamp. `now()` is that
clock, which the consumer uses to close minutes. Hours without bars (the FX weekend)
have no ticks.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np

from trading_assets.adapters.ig.streaming import Tick
from trading_assets.adapters.replay.market_data import ReplayMarketData

SPREAD_EURUSD = 0.00006


def _seed(epic: str, hour: datetime) -> int:
    return int.from_bytes(hashlib.sha256(f"{epic}|{hour.isoformat()}".encode()).digest()[:8], "big")


def hour_ticks(epic: str, hour: datetime, o: float, h: float, lo: float, c: float,
               ticks_per_minute: int = 4) -> list[Tick]:
    """The ticks of one replay hourly bar (see module docstring)."""
    rng = np.random.default_rng(_seed(epic, hour))
    first, second = (lo, h) if c >= o else (h, lo)
    t1, t2 = sorted(rng.uniform(5, 55, size=2))
    knots_t = np.array([0.0, t1, max(t2, t1 + 1.0), 60.0])
    knots_p = np.array([o, first, second, c])
    k = ticks_per_minute
    at = (np.arange(60 * k) + 1) / k  # minutes into the hour at which each tick is priced
    path = np.interp(at, knots_t, knots_p)
    # a wiggle that vanishes at the knots: sine bumps between them
    wiggle = np.zeros_like(at)
    for a, b in itertools.pairwise(knots_t):
        inside = (at > a) & (at < b)
        wiggle[inside] = np.sin(np.pi * (at[inside] - a) / (b - a)) * rng.normal(0, 1) \
            * np.sin(3 * np.pi * (at[inside] - a) / (b - a))
    span = max(h - lo, 1e-12)
    mids = path + 0.05 * span * wiggle
    mids[-1] = c
    half = SPREAD_EURUSD * (o / 1.08) / 2
    out = []
    for i, m in enumerate(mids):
        minute, j = divmod(i, k)
        ts = hour + timedelta(minutes=minute, seconds=60 * (j + 1) / k) - timedelta(milliseconds=1)
        out.append(Tick(epic, ts, round(float(m) - half, 6), round(float(m) + half, 6)))
    return out


def day_ticks(epics: Sequence[str], day: date, ticks_per_minute: int = 4,
              start: datetime | None = None) -> list[Tick]:
    """Every replay tick of `epics` on UTC `day` (from `start` on), in time order."""
    lo_t = datetime(day.year, day.month, day.day, tzinfo=UTC)
    bars = ReplayMarketData(session="fx").get_bars(list(epics), lo_t, lo_t + timedelta(days=1), "1h")
    ticks: list[Tick] = []
    for ts, row in bars.iterrows():
        hour = ts.to_pydatetime()
        if start is not None and hour + timedelta(hours=1) <= start:
            continue
        ticks.extend(hour_ticks(row["symbol"], hour, row["open"], row["high"], row["low"], row["close"],
                                ticks_per_minute))
    ticks.sort(key=lambda t: (t.timestamp, t.epic))
    if start is not None:
        ticks = [t for t in ticks if t.timestamp >= start]
    return ticks


class ReplayPriceStream:
    """`PriceStream` replaying `day_ticks` at `speed` times real time from `start`
    (default: the day's first replay tick)."""

    source = "replay"

    def __init__(self, day: date, *, speed: float = 1.0, ticks_per_minute: int = 4,
                 start: datetime | None = None, wall: Callable[[], float] = time.monotonic) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.day, self.speed, self.ticks_per_minute = day, float(speed), ticks_per_minute
        self.start = start
        self.status = "DISCONNECTED"
        self._wall = wall
        self._wall0: float | None = None
        self._t0: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0

    def now(self) -> datetime:
        """The replay clock (the day's time the stream has reached)."""
        if self._t0 is None or self._wall0 is None:
            return self.start or datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)
        return self._t0 + timedelta(seconds=(self._wall() - self._wall0) * self.speed)

    def subscribe(self, epics: Sequence[str], on_tick: Callable[[Tick], None]) -> None:
        ticks = day_ticks(epics, self.day, self.ticks_per_minute, self.start)
        if not ticks:
            raise ValueError(f"no replay prices for {list(epics)} on {self.day} (the FX market is closed "
                             "that day: pick a weekday)")
        self._t0 = self.start or ticks[0].timestamp.replace(second=0, microsecond=0)
        self._wall0 = self._wall()
        self._stop.clear()
        self.status = "CONNECTED:REPLAY"

        def run() -> None:
            for tick in ticks:
                while not self._stop.is_set():
                    ahead = (tick.timestamp - self.now()).total_seconds() / self.speed
                    if ahead <= 0:
                        break
                    self._stop.wait(min(ahead, 0.2))
                if self._stop.is_set():
                    return
                on_tick(tick)
                self.sent += 1
            self.status = "ENDED"

        self._thread = threading.Thread(target=run, name="replay-price-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.status = "DISCONNECTED"
