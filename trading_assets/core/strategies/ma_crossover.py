"""The `ma_crossover` flow: fast/slow simple-moving-average crossover over a watchlist.

- Fast SMA crosses above the slow SMA: go long (closing a short first, if shorts are on).
- Fast SMA crosses below the slow SMA: close the long (and go short if `allow_short`).

The same `crossovers` function drives the backtest (`backtest_signals`, simulated by
`core.backtest`) and the live signal (`latest_signal`), so backtest and live agree bar
for bar.

Choices where the brief is silent:
- A cross happens at bar i when fast > slow at i and fast <= slow at i-1 (up), or
  fast < slow at i and fast >= slow at i-1 (down), both SMAs defined at i-1 and i.
  Touching (fast == slow) is not a cross by itself; leaving the tie is.
- No position at the start even if fast > slow when the SMAs first exist: only an
  actual cross trades (that is what a crossover strategy means).
- Fills at the close of the bar on which the cross is seen. The cross is known at that
  close, so there is no look-ahead; a live tick right after the close trades the same.
- Long only by default; `allow_short` makes it always-in-the-market after the first cross.
- Each symbol's sleeve is fully invested (fractional shares) at every entry, so trades
  compound; slippage and commissions are the backtester's (`core.backtest`).
- A trade still open at the end is reported with `exit_reason="open"`, marked at the
  last price without exit costs; it counts in the total return and the equity curve but
  not in the win/loss statistics.
- Prices must be finite and positive; anything else raises ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from trading_assets.core.backtest import (
    BacktestConfig,
    BacktestSignals,
    CashAndCosts,
    PricePanels,
    bars_between,
    run_backtest,
)
from trading_assets.core.bars import panel
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

    def __post_init__(self) -> None:
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")


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
    """The position held after each bar (+1 long, -1 short, 0 flat).

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


def backtest_signals(
    bars: pd.DataFrame,
    params: Params | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
) -> BacktestSignals:
    """`signal_panel` over a bar frame for `run_backtest`: fills at the close of the
    crossing bar, each symbol's sleeve fully invested. Averages are taken over all the
    bars given; only bars in [start, end) trade."""
    params = params or Params()
    signal = signal_panel(panel(bars, "close"), params)
    traded = bars_between(bars, start, end)
    prices = PricePanels.from_bars(traded)
    return BacktestSignals(prices, signal.reindex(prices.close.index), _rules(params))


def _rules(params: Params) -> BacktestConfig:
    """Fill at the crossing bar's close, the whole sleeve in every trade."""
    return BacktestConfig(fill="close", size_mode="fraction", size=1.0, allow_short=params.allow_short)


def summary_frame(
    bars: pd.DataFrame, params: Params | None = None, costs: CashAndCosts | None = None
) -> pd.DataFrame:
    """One row of backtest stats per symbol of a bar frame (each symbol on its own cash),
    for the daily analysis."""
    params = params or Params()
    rows = {}
    for symbol, group in bars.groupby("symbol", sort=True):
        close = group["close"].to_frame(str(symbol))
        close.index = pd.DatetimeIndex(group.index)
        prices = PricePanels(close, close, close, close)  # closes are all a close fill needs
        signals = BacktestSignals(prices, signal_panel(close, params), _rules(params))
        rows[str(symbol)] = run_backtest(signals, costs or CashAndCosts()).stats
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "symbol"
    return out
