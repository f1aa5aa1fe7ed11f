"""The offline default market-data provider: deterministic bars for any symbol and time.

How a bar is made (all vectorised over symbols x bars):
- The bundled real hourly EURUSD bars give a tape of log returns (demeaned, so the tape
  is periodic and prices stay bounded) and intrabar shapes (how far high/low reach
  beyond open/close, volume).
- Time maps onto the tape by *bar index*: n = (bar start - epoch) / interval, on the
  wall clock, so the bar for (symbol, time) is the same whichever run asks, and the
  overnight and weekend gaps appear naturally as the tape moves on while the market is
  closed.
- Each symbol gets its own offset into the tape, price level and volatility multiplier
  from a hash of its name (stable across processes and machines).
- Only bars inside NYSE sessions are returned (exchange calendar: holidays, half days).

Real sample data, not made-up noise; deterministic; no network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from trading_assets.core import calendar
from trading_assets.core.bars import BAR_COLUMNS, empty_bars, normalise_bars
from trading_assets.core.ports import MarketDataError, UnknownSymbolError

INTERVALS = {"30min": 30, "1h": 60}
_EPOCH = pd.Timestamp("2000-01-03 14:30", tz="UTC")
_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9]{0,9}([.-][A-Z0-9]{1,4})?$")


@cache
def _tape() -> dict[str, np.ndarray]:
    """Log-return tape and intrabar shape from the bundled real hourly bars."""
    with resources.files("trading_assets.data").joinpath("EURUSD_1h.csv.gz").open("rb") as fh:
        raw = pd.read_csv(fh, compression="gzip", index_col=0)
    close = raw["Close"].to_numpy(dtype="float64")
    open_ = raw["Open"].to_numpy(dtype="float64")
    rets = np.diff(np.log(close))
    rets = (rets - rets.mean()) / rets.std()  # unit variance; scaled per symbol below
    level = np.concatenate([[0.0], np.cumsum(rets)])[:-1]  # periodic: sums to zero
    body_hi = np.maximum(open_, close)[1:]
    body_lo = np.minimum(open_, close)[1:]
    up = (raw["High"].to_numpy()[1:] - body_hi) / close[1:] / np.std(np.diff(np.log(close)))
    down = (body_lo - raw["Low"].to_numpy()[1:]) / close[1:] / np.std(np.diff(np.log(close)))
    volume = raw["Volume"].to_numpy(dtype="float64")[1:]
    return {
        "level": level,
        "up": np.clip(up, 0, None),
        "down": np.clip(down, 0, None),
        "volume": volume / volume.mean(),
    }


@cache
def default_universe() -> frozenset[str]:
    text = resources.files("trading_assets.data").joinpath("universe.txt").read_text()
    return frozenset(tok for line in text.splitlines() if not line.startswith("#") for tok in line.split())


def _symbol_params(symbol: str, n_tape: int) -> tuple[int, float, float, float]:
    """Stable (offset, base price, per-bar volatility, base volume) for a symbol."""
    h = hashlib.sha256(symbol.encode()).digest()
    offset = int.from_bytes(h[:4], "big") % n_tape
    base = 20.0 + (int.from_bytes(h[4:6], "big") / 65535.0) * 380.0
    vol = 0.001 + (h[6] / 255.0) * 0.003  # 0.1% .. 0.4% per 30 minutes
    if symbol.startswith(("TQQQ", "SQQQ", "SOXL", "SOXS", "UPRO", "SPXU")):
        vol *= 3.0  # leveraged ETFs move about 3x
    volume = 1e5 * (1 + int.from_bytes(h[7:9], "big") / 6553.5)
    return offset, base, vol, volume


class ReplayMarketData:
    """`core.ports.MarketData` over the bundled real return tape (see module docstring)."""

    name = "replay"

    def __init__(self, universe: Sequence[str] | None = None, allow_any_symbol: bool = False) -> None:
        self.universe = frozenset(universe) if universe is not None else default_universe()
        self.allow_any_symbol = allow_any_symbol

    def check_symbols(self, symbols: Sequence[str]) -> None:
        bad = [s for s in symbols if not isinstance(s, str) or not _SYMBOL_RE.match(s)]
        if bad:
            raise UnknownSymbolError(f"not valid ticker symbols: {bad}")
        if not self.allow_any_symbol:
            unknown = sorted(set(symbols) - self.universe)
            if unknown:
                raise UnknownSymbolError(
                    f"unknown symbols {unknown}: the replay provider knows "
                    f"{len(self.universe)} symbols (see trading_assets/data/universe.txt)")

    def bar_starts(self, start: datetime, end: datetime, interval: str) -> pd.DatetimeIndex:
        """Session bar starts (UTC) in [start, end) at the interval, anchored at the open."""
        if interval not in INTERVALS:
            raise MarketDataError(f"replay supports intervals {sorted(INTERVALS)}, not {interval!r}")
        start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
        if start_ts.tzinfo is None or end_ts.tzinfo is None:
            raise MarketDataError("start and end must be tz-aware")
        first_local = start_ts.tz_convert(calendar.TZ).date()
        last_local = end_ts.tz_convert(calendar.TZ).date()
        starts: list[pd.Timestamp] = []
        for day in calendar.sessions_between(first_local, last_local):
            starts.extend(calendar.session_bar_starts(day, INTERVALS[interval]))
        idx = pd.DatetimeIndex(starts).tz_convert("UTC") if starts else pd.DatetimeIndex([], tz="UTC")
        return idx[(idx >= start_ts) & (idx < end_ts)]

    def get_bars(self, symbols: Sequence[str], start: datetime, end: datetime, interval: str = "30min") -> pd.DataFrame:
        symbols = list(dict.fromkeys(symbols))
        self.check_symbols(symbols)
        starts = self.bar_starts(start, end, interval)
        if len(starts) == 0 or not symbols:
            return empty_bars()
        tape = _tape()
        n_tape = len(tape["level"])
        minutes = INTERVALS[interval]
        # 30-minute steps since the epoch for every bar start and its end; an hourly bar
        # spans two steps, the price path is the same tape either way.
        step0 = ((starts - _EPOCH) // pd.Timedelta(minutes=30)).to_numpy(dtype=np.int64)
        steps = np.int64(minutes // 30)
        params = np.array([_symbol_params(s, n_tape) for s in symbols])
        offset = params[:, 0].astype(np.int64)[:, None]
        base, vol, vol0 = params[:, 1:2], params[:, 2:3], params[:, 3:4]
        i_open = (step0[None, :] + offset) % n_tape
        i_close = (step0[None, :] + steps + offset) % n_tape
        level = tape["level"]
        open_ = base * np.exp(vol * level[i_open])
        close = base * np.exp(vol * level[i_close])
        reach = np.maximum(tape["up"][i_close], 0) * vol * close
        dip = np.maximum(tape["down"][i_close], 0) * vol * close
        high = np.maximum(open_, close) + reach
        low = np.minimum(open_, close) - dip
        volume = np.round(vol0 * tape["volume"][i_close] * steps)
        n_sym, n_bar = open_.shape
        frame = pd.DataFrame(
            {
                "symbol": np.repeat(np.array(symbols, dtype=object), n_bar),
                "open": open_.ravel(), "high": high.ravel(), "low": low.ravel(),
                "close": close.ravel(), "volume": volume.ravel(),
            },
            index=pd.DatetimeIndex(pd.to_datetime(np.tile(starts.asi8, n_sym), utc=True), name="timestamp"),
        )
        return normalise_bars(frame.loc[:, list(BAR_COLUMNS)])
