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
- `session="fx"`: hourly bars of IG epics (`CS.D.EURUSD.MINI.IP`) through the FX week
  (core/fx_hours.py). One bar is one step of the tape, one real EURUSD hour, at EURUSD's
  real hourly volatility and around each pair's usual level, so they move like real FX.

Intervals under 30 minutes ("1min", "5min", "15min") are cut out of the 30-minute bars,
so they agree with them exactly:
- Each 30-minute bar's log-price path is a bridge from its open to its close: a random
  walk of 30 one-minute steps read from the same tape at a second per-symbol offset
  (30 tape steps per 30-minute bar, so minutes never reuse the 30-minute step at the same
  place), scaled to one tape unit of variance over the bar, minus the straight line that
  makes it end where it started, plus the straight line from the open to the close. So
  the first minute opens at the 30-minute open and the last minute closes at the
  30-minute close, bit for bit (the endpoints are copied, not recomputed), and the
  30 minute volumes are whole numbers that add up to the 30-minute volume.
- A minute's high/low reach beyond its open/close by the tape's intrabar shape scaled to
  a minute (volatility / sqrt(30)), so high >= max(open, close) >= min(open, close) >=
  low > 0. The bridge is not squeezed into the 30-minute range: a minute's high or low
  may lie beyond the 30-minute bar's (only open, close and volume aggregate exactly).
- 5- and 15-minute bars aggregate the 1-minute bars (first open, last close, max high,
  min low, summed volume).
- A bridge knows where it is going: within a 30-minute bar the minutes drift towards its
  close, a little predictability real markets do not offer. Keep it in mind when a
  1-minute strategy backtests well on replay data.

Real sample data, not made-up noise; deterministic; no network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd

from trading_assets.core import calendar, fx_hours
from trading_assets.core.bars import BAR_COLUMNS, empty_bars, normalise_bars
from trading_assets.core.ports import MarketDataError, UnknownSymbolError

INTERVALS = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "1h": 60}
_MINUTES_PER_STEP = 30  # the tape moves one step per 30 minutes
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
        "hourly_vol": np.std(np.diff(np.log(close))),  # the real EURUSD hourly log-return std
        "level": level,
        "step": np.roll(level, -1) - level,  # level[i+1] - level[i], wrapping round
        "up": np.clip(up, 0, None),
        "down": np.clip(down, 0, None),
        "volume": volume / volume.mean(),
    }


@cache
def _fx_bar_starts(start: datetime, end: datetime, interval: str) -> pd.DatetimeIndex:
    """Hourly FX bar starts (UTC) in [start, end): the FX week, less IG's closures."""
    if interval != "1h":
        raise MarketDataError(f"replay FX bars are hourly ('1h'), not {interval!r}")
    start_ts, end_ts = pd.Timestamp(start), pd.Timestamp(end)
    if start_ts.tzinfo is None or end_ts.tzinfo is None:
        raise MarketDataError("start and end must be tz-aware")
    first = start_ts.tz_convert(fx_hours.TZ).date()
    last = end_ts.tz_convert(fx_hours.TZ).date() + timedelta(days=1)
    naive = [b for day in pd.date_range(first, last, freq="D") for b in fx_hours.bar_starts(day.date())]
    if not naive:
        return pd.DatetimeIndex([], tz="UTC")
    idx = pd.DatetimeIndex(naive).tz_localize(fx_hours.TZ, ambiguous="NaT", nonexistent="NaT")
    idx = idx[~idx.isna()].tz_convert("UTC").as_unit("ns")
    return idx[(idx >= start_ts) & (idx < end_ts)]


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


def _minute_offset(symbol: str, n_tape: int) -> int:
    """Stable second offset into the tape, where a symbol's minute steps are read."""
    h = hashlib.sha256(symbol.encode()).digest()
    return int.from_bytes(h[9:13], "big") % n_tape


FX_LEVELS = {"EURUSD": 1.08, "GBPUSD": 1.27, "USDJPY": 150.0, "AUDUSD": 0.66, "USDCHF": 0.88,
             "USDCAD": 1.36, "NZDUSD": 0.60, "EURGBP": 0.85, "EURJPY": 162.0}
EPIC_RE = re.compile(r"^[A-Z0-9_]+(\.[A-Z0-9_]+){2,}$")


def _fx_params(epic: str, n_tape: int) -> tuple[int, float, float, float]:
    """(offset, level, hourly volatility, base volume) for an IG epic: the pair's usual
    level (its code is the epic's third part, CS.D.EURUSD.MINI.IP), EURUSD's real hourly
    volatility, a stable offset into the tape from the epic's hash."""
    h = hashlib.sha256(epic.encode()).digest()
    parts = epic.split(".")
    level = FX_LEVELS.get(parts[2] if len(parts) > 2 else "", 1.0)
    return int.from_bytes(h[:4], "big") % n_tape, level, float(_tape()["hourly_vol"]), 1e3


def _tape_bars(symbols: list[str], step0: np.ndarray, steps: int,
               params_for=_symbol_params) -> dict[str, np.ndarray]:
    """open/high/low/close/volume (symbols x bars) of bars spanning `steps` tape steps
    from the tape steps `step0` since the epoch."""
    tape = _tape()
    n_tape = len(tape["level"])
    params = np.array([params_for(s, n_tape) for s in symbols])
    offset = params[:, 0].astype(np.int64)[:, None]
    base, vol, vol0 = params[:, 1:2], params[:, 2:3], params[:, 3:4]
    i_open = (step0[None, :] + offset) % n_tape
    i_close = (step0[None, :] + np.int64(steps) + offset) % n_tape
    level = tape["level"]
    open_ = base * np.exp(vol * level[i_open])
    close = base * np.exp(vol * level[i_close])
    reach = np.maximum(tape["up"][i_close], 0) * vol * close
    dip = np.maximum(tape["down"][i_close], 0) * vol * close
    return {
        "open": open_,
        "high": np.maximum(open_, close) + reach,
        "low": np.minimum(open_, close) - dip,
        "close": close,
        "volume": np.round(vol0 * tape["volume"][i_close] * steps),
    }


def _minute_bars(symbols: list[str], step0: np.ndarray) -> dict[str, np.ndarray]:
    """The 1-minute bars (symbols x 30-minute bars x 30 minutes) inside the 30-minute bars
    starting `step0` steps after the epoch (see the module docstring)."""
    tape = _tape()
    n_tape = len(tape["level"])
    m = _MINUTES_PER_STEP
    outer = _tape_bars(symbols, step0, 1)
    vol = np.array([_symbol_params(s, n_tape)[2] for s in symbols])[:, None, None]
    offset = np.array([_minute_offset(s, n_tape) for s in symbols], dtype=np.int64)[:, None, None]
    idx = (step0[None, :, None] * m + offset + np.arange(m, dtype=np.int64)) % n_tape
    walk = np.concatenate(
        [np.zeros((*idx.shape[:2], 1)), np.cumsum(tape["step"][idx], axis=-1) / np.sqrt(m)], axis=-1)
    frac = np.arange(m + 1) / m
    bridge = walk - frac * walk[..., -1:]  # 0 at both ends
    log_open, log_close = np.log(outer["open"])[..., None], np.log(outer["close"])[..., None]
    path = np.exp((1.0 - frac) * log_open + frac * log_close + vol * bridge)
    path[..., 0] = outer["open"]  # exact, not exp(log(x))
    path[..., -1] = outer["close"]
    open_, close = path[..., :-1], path[..., 1:]
    scale = vol / np.sqrt(m) * close
    high = np.maximum(open_, close) + np.maximum(tape["up"][idx], 0) * scale
    low = np.minimum(open_, close) - np.minimum(np.maximum(tape["down"][idx], 0) * scale,
                                                0.5 * np.minimum(open_, close))
    # whole-number volumes that add up to the 30-minute bar's exactly
    weight = np.cumsum(tape["volume"][idx], axis=-1)
    share = weight / weight[..., -1:]
    share[..., -1] = 1.0
    total = outer["volume"][..., None]
    cum = np.concatenate([np.zeros((*share.shape[:2], 1)), np.round(total * share)], axis=-1)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": np.diff(cum, axis=-1)}


def _sub_bars(symbols: list[str], starts: pd.DatetimeIndex, minutes: int) -> dict[str, np.ndarray]:
    """Bars of `minutes` (a divisor of 30) at `starts`, aggregated from the 1-minute bars."""
    m = _MINUTES_PER_STEP
    since = ((starts - _EPOCH) // pd.Timedelta(minutes=1)).to_numpy(dtype=np.int64)
    step, within = np.divmod(since, m)
    parents, where = np.unique(step, return_inverse=True)
    minute = _minute_bars(symbols, parents)
    if minutes == 1:
        return {k: v[:, where, within] for k, v in minute.items()}
    shape = (len(symbols), len(parents), m // minutes, minutes)
    grouped = {k: v.reshape(shape) for k, v in minute.items()}
    sub = within // minutes
    return {
        "open": grouped["open"][..., 0][:, where, sub],
        "high": grouped["high"].max(axis=-1)[:, where, sub],
        "low": grouped["low"].min(axis=-1)[:, where, sub],
        "close": grouped["close"][..., -1][:, where, sub],
        "volume": grouped["volume"].sum(axis=-1)[:, where, sub],
    }


class ReplayMarketData:
    """`core.ports.MarketData` over the bundled real return tape (see module docstring)."""

    name = "replay"

    def __init__(self, universe: Sequence[str] | None = None, allow_any_symbol: bool = False,
                 session: str = "nyse") -> None:
        if session not in ("nyse", "fx"):
            raise ValueError(f"session must be 'nyse' or 'fx', not {session!r}")
        self.universe = frozenset(universe) if universe is not None else default_universe()
        self.allow_any_symbol = allow_any_symbol
        self.session = session

    def check_symbols(self, symbols: Sequence[str]) -> None:
        if self.session == "fx":
            bad = [s for s in symbols if not isinstance(s, str) or not EPIC_RE.match(s)]
            if bad:
                raise UnknownSymbolError(f"not IG epics (like CS.D.EURUSD.MINI.IP): {bad}")
            return
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
        if self.session == "fx":
            return _fx_bar_starts(start, end, interval)
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
        minutes = INTERVALS[interval]
        if self.session == "fx":  # one real EURUSD hour per bar
            step0 = ((starts - _EPOCH) // pd.Timedelta(hours=1)).to_numpy(dtype=np.int64)
            bars = _tape_bars(symbols, step0, 1, params_for=_fx_params)
        elif minutes < _MINUTES_PER_STEP:
            bars = _sub_bars(symbols, starts, minutes)
        else:
            # 30-minute steps since the epoch for every bar start; an hourly bar spans
            # two steps, the price path is the same tape either way.
            step0 = ((starts - _EPOCH) // pd.Timedelta(minutes=30)).to_numpy(dtype=np.int64)
            bars = _tape_bars(symbols, step0, minutes // _MINUTES_PER_STEP)
        open_, high, low, close, volume = (bars[k] for k in ("open", "high", "low", "close", "volume"))
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
