"""Seed 003: fast/slow simple-moving-average crossover, simulated over a price series.

- Fast SMA crosses above the slow SMA: go long (closing a short first, if shorts are on).
- Fast SMA crosses below the slow SMA: close the long (and go short if `allow_short`).

The same `crossovers` function drives the simulation and the live signal
(`latest_signal`), so backtest and live agree bar for bar.

Choices where the seed is silent:
- A cross happens at bar i when fast > slow at i and fast <= slow at i-1 (up), or
  fast < slow at i and fast >= slow at i-1 (down), both SMAs defined at i-1 and i.
  Touching (fast == slow) is not a cross by itself; leaving the tie is.
- No position at the start even if fast > slow when the SMAs first exist: only an
  actual cross trades (that is what a crossover strategy means).
- Fills at the close of the bar on which the cross is seen. The cross is known at that
  close, so there is no look-ahead; a live tick right after the close trades the same.
- Long only by default; `allow_short` makes it always-in-the-market after the first cross.
- Fully invested, fractional units; `commission` is a fraction of notional per fill
  (charged on entry and on exit). No slippage.
- Short P&L is the simple short return side * (exit / entry - 1) on the entry equity.
- A trade still open at the end is reported with `closed = False`, marked at the last
  price without an exit commission; it counts in `total_return` and the equity curve but
  not in the win/loss statistics.
- Prices must be finite and positive; anything else raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from trading_assets.core.indicators import sma

FLOW = "ma_crossover"


class Signal(StrEnum):
    BUY = "buy"  # fast crossed above slow on the last bar
    SELL = "sell"  # fast crossed below slow on the last bar
    NONE = "none"


@dataclass(frozen=True)
class Params:
    fast: int = 5
    slow: int = 20
    allow_short: bool = False
    commission: float = 0.0
    initial_equity: float = 10_000.0

    def __post_init__(self) -> None:
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        if not 0 <= self.commission < 1:
            raise ValueError(f"commission must be in [0, 1), got {self.commission}")
        if not self.initial_equity > 0:
            raise ValueError(f"initial_equity must be positive, got {self.initial_equity}")


@dataclass(frozen=True)
class Simulation:
    """Trades (one row each), the equity curve (one value per price) and summary stats."""

    trades: pd.DataFrame
    equity: pd.Series
    stats: dict[str, float]


TRADE_COLUMNS = (
    "side", "entry_time", "entry_price", "exit_time", "exit_price", "bars_held", "return", "closed",
)


def _prices(prices: pd.Series) -> np.ndarray:
    values = np.asarray(prices, dtype="float64")
    if values.ndim != 1:
        raise ValueError(f"prices must be 1-D, got shape {values.shape}")
    if not (np.isfinite(values) & (values > 0)).all():
        bad = int((~(np.isfinite(values) & (values > 0))).sum())
        raise ValueError(f"prices must be finite and positive; {bad} are not")
    return values


def crossovers(prices: pd.Series | np.ndarray, params: Params) -> np.ndarray:
    """+1 where fast crosses above slow, -1 where it crosses below, 0 elsewhere (int8)."""
    values = _prices(prices)
    fast = np.asarray(sma(values, params.fast), dtype="float64")
    slow = np.asarray(sma(values, params.slow), dtype="float64")
    out = np.zeros(len(values), dtype="int8")
    if len(values) < 2:
        return out
    diff = fast - slow
    prev, cur = diff[:-1], diff[1:]
    defined = np.isfinite(prev) & np.isfinite(cur)
    out[1:][defined & (cur > 0) & (prev <= 0)] = 1
    out[1:][defined & (cur < 0) & (prev >= 0)] = -1
    return out


def latest_signal(prices: pd.Series | np.ndarray, params: Params) -> Signal:
    """What the live flow does on the newest bar: BUY on an up-cross, SELL on a down-cross."""
    cross = crossovers(prices, params)
    if len(cross) == 0 or cross[-1] == 0:
        return Signal.NONE
    return Signal.BUY if cross[-1] > 0 else Signal.SELL


def positions(prices: pd.Series | np.ndarray, params: Params) -> np.ndarray:
    """The position held after each bar (+1 long, -1 short, 0 flat), as `simulate` holds it.

    This is the signal the shared backtester (`core.backtest`, fill="close") takes.
    """
    cross = crossovers(prices, params).astype("float64")
    cross[cross == 0] = np.nan
    held = pd.Series(cross).ffill().fillna(0.0).to_numpy()
    return held if params.allow_short else np.maximum(held, 0.0)


def signal_panel(closes: pd.DataFrame, params: Params) -> pd.DataFrame:
    """`positions` for every column of a close panel (timestamp x symbol).

    NaN closes (a symbol not trading yet, or a missing bar) are skipped when computing
    the averages and come out as NaN ("no opinion") for the backtester.
    """
    out = pd.DataFrame(np.nan, index=closes.index, columns=closes.columns)
    for symbol in closes.columns:
        column = closes[symbol].dropna()
        if len(column):
            out.loc[column.index, symbol] = positions(column.to_numpy(), params)
    return out


def simulate(prices: pd.Series, params: Params | None = None) -> Simulation:
    """Run the crossover strategy over `prices` (a Series indexed by time)."""
    params = params or Params()
    values = _prices(prices)
    index = prices.index if isinstance(prices, pd.Series) else pd.RangeIndex(len(values))
    cross = crossovers(values, params)
    cost = params.commission

    equity = np.empty(len(values))
    trades: list[dict] = []
    side = 0
    entry_i = -1
    flat_equity = params.initial_equity  # equity while flat, and before the open trade
    entry_equity = flat_equity  # equity invested in the open trade (after entry commission)

    def marked(i: int) -> float:
        return entry_equity * (1.0 + side * (values[i] / values[entry_i] - 1.0))

    def close_at(i: int) -> None:
        nonlocal side, flat_equity
        after = marked(i) * (1.0 - cost)
        trades.append(_trade(side, index, values, entry_i, i, after / flat_equity - 1.0, True))
        flat_equity, side = after, 0

    def open_at(i: int, new_side: int) -> None:
        nonlocal side, entry_i, entry_equity
        side, entry_i = new_side, i
        entry_equity = flat_equity * (1.0 - cost)

    for i, signal in enumerate(cross):
        if signal > 0:
            if side < 0:
                close_at(i)
            if side == 0:
                open_at(i, 1)
        elif signal < 0:
            if side > 0:
                close_at(i)
            if side == 0 and params.allow_short:
                open_at(i, -1)
        equity[i] = flat_equity if side == 0 else marked(i)

    if side != 0:
        last = len(values) - 1
        ret = equity[last] / flat_equity - 1.0
        trades.append(_trade(side, index, values, entry_i, last, ret, False))

    frame = pd.DataFrame(trades, columns=list(TRADE_COLUMNS))
    curve = pd.Series(equity, index=index, name="equity")
    return Simulation(frame, curve, _stats(frame, curve, cross, params, values))


def _trade(side, index, values, i, j, ret, closed) -> dict:
    return {
        "side": "long" if side > 0 else "short",
        "entry_time": index[i],
        "entry_price": float(values[i]),
        "exit_time": index[j],
        "exit_price": float(values[j]),
        "bars_held": int(j - i),
        "return": float(ret),
        "closed": closed,
    }


def _stats(trades: pd.DataFrame, equity: pd.Series, cross, params: Params, values) -> dict:
    closed = trades[trades["closed"]] if len(trades) else trades
    returns = closed["return"].to_numpy(dtype="float64") if len(closed) else np.array([])
    wins = int((returns > 0).sum())
    curve = equity.to_numpy()
    if len(curve):
        peaks = np.maximum.accumulate(curve)
        max_dd = float(np.max(1.0 - curve / peaks))
        final = float(curve[-1])
    else:
        max_dd, final = 0.0, params.initial_equity
    in_market = int(trades["bars_held"].sum()) if len(trades) else 0
    return {
        "trades": float(len(returns)),
        "wins": float(wins),
        "losses": float(len(returns) - wins),
        "win_rate": float(wins / len(returns)) if len(returns) else math.nan,
        "mean_trade_return": float(returns.mean()) if len(returns) else math.nan,
        "total_return": final / params.initial_equity - 1.0,
        "max_drawdown": max_dd,
        "exposure": in_market / max(len(values) - 1, 1),
        "final_equity": final,
        "crosses": float(np.count_nonzero(cross)),
    }


def summary_frame(bars: pd.DataFrame, params: Params | None = None) -> pd.DataFrame:
    """One row of stats per symbol of a bar frame (closes), for the daily analysis."""
    params = params or Params()
    rows = {}
    for symbol, group in bars.groupby("symbol", sort=True):
        rows[str(symbol)] = simulate(group["close"], params).stats
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "symbol"
    return out
