"""The `ema_concentration` flow: TQQQ 10h/20h EMA concentration.

- Bullish  (price > EMA10 > EMA20 on hourly bars): sell every other position, buy the
  target with `buying_power_fraction` (95%) of buying power.
- Bearish  (price < EMA10 or EMA10 < EMA20): sell the target if held.
- Otherwise neutral: no action.

Choices where the seed is silent (documented in README):
- "Hourly bars" are built from 30-minute bars, anchored at the 09:30 open (09:30-10:30,
  ..., 15:30-16:00), so at any tick the last hourly bar holds what has traded so far of
  the current hour, and "price" is the last 30-minute close. That is what a live poll of a
  1h time series returns mid-hour.
- Bullish while the target is already held: sell the others but do not add to the target
  (no pyramiding; the concentration is already in place).
- Whole shares only; a buy smaller than one share is skipped with a reason.
- Shorts in other symbols are covered (a buy) when concentrating.
- Fewer hourly bars than the slow EMA needs: signal `no_data`, no action.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from trading_assets.core.backtest import BacktestConfig, BacktestSignals, PricePanels, bars_between
from trading_assets.core.bars import panel
from trading_assets.core.calendar import TZ, previous_sessions, session_open_close
from trading_assets.core.indicators import ema
from trading_assets.core.ports import Side
from trading_assets.core.tick import PlannedOrder, TickPlan

FLOW = "ema_concentration"


class Signal(StrEnum):
    BULLISH = "bullish"
    BEARISH = "bearish"
    NEUTRAL = "neutral"
    NO_DATA = "no_data"


@dataclass(frozen=True)
class Params:
    target: str = "TQQQ"
    fast: int = 10
    slow: int = 20
    buying_power_fraction: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.fast < self.slow:
            raise ValueError(f"need 0 < fast < slow, got fast={self.fast} slow={self.slow}")
        if not 0 < self.buying_power_fraction <= 1:
            raise ValueError("buying_power_fraction must be in (0, 1]")


@dataclass
class Decision(TickPlan):
    """The tick engine's plan (orders + notes), with the signal it came from."""

    signal: Signal = Signal.NEUTRAL


def classify(price, ema_fast, ema_slow):
    """Signal for each element (scalars or aligned arrays). NaN anywhere -> no_data."""
    p, f, s = (np.asarray(v, dtype="float64") for v in (price, ema_fast, ema_slow))
    missing = np.isnan(p) | np.isnan(f) | np.isnan(s)
    with np.errstate(invalid="ignore"):
        bullish = (p > f) & (f > s)
        bearish = (p < f) | (f < s)
    out = np.where(
        missing,
        Signal.NO_DATA.value,
        np.where(bullish, Signal.BULLISH.value, np.where(bearish, Signal.BEARISH.value, Signal.NEUTRAL.value)),
    )
    return Signal(out.item()) if out.ndim == 0 else out


def hourly_closes(bars: pd.DataFrame) -> pd.DataFrame:
    """Hourly closes (timestamp x symbol) from 30-minute bars, anchored at :30.

    Each hourly bar is labelled by its start in UTC; the last one may be partial.
    """
    closes = panel(bars, "close")
    local = closes.tz_convert(TZ)
    hourly = local.resample("60min", offset="30min", label="left", closed="left").last()
    hourly = hourly.dropna(how="all")
    return hourly.tz_convert("UTC")


def indicator_frame(bars: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per symbol: last price, EMA fast/slow on hourly closes, hourly bar count."""
    hourly = hourly_closes(bars)
    fast = ema(hourly, params.fast)
    slow = ema(hourly, params.slow)
    closes = panel(bars, "close")
    out = pd.DataFrame(
        {
            "price": closes.ffill().iloc[-1],
            "ema_fast": fast.iloc[-1],
            "ema_slow": slow.iloc[-1],
            "hourly_bars": hourly.notna().sum(),
            "as_of": closes.index[-1],
        }
    )
    out.index.name = "symbol"
    return out


def signals_frame(indicators: pd.DataFrame) -> pd.DataFrame:
    """Indicators plus the signal column, vectorised over all symbols."""
    out = indicators.copy()
    out["signal"] = classify(out["price"], out["ema_fast"], out["ema_slow"])
    return out


def plan(
    signal: Signal,
    params: Params,
    positions: Mapping[str, float],
    prices: Mapping[str, float],
    buying_power: float,
) -> Decision:
    """The orders one tick should place, given the target's signal and the account."""
    target = params.target
    held = {s: q for s, q in positions.items() if q != 0}
    notes: list[str] = []
    orders: list[PlannedOrder] = []

    def price_of(symbol: str) -> float:
        price = prices.get(symbol)
        if price is None or not math.isfinite(price) or price <= 0:
            raise ValueError(f"no usable price for {symbol} (got {price!r}); cannot size an order")
        return float(price)

    if signal is Signal.BULLISH:
        proceeds = 0.0
        for symbol, qty in sorted(held.items()):
            if symbol == target and qty > 0:
                continue
            px = price_of(symbol)
            if qty > 0:
                orders.append(PlannedOrder(symbol, Side.SELL, qty, "exit", px, "bullish: concentrate into target"))
                proceeds += qty * px
            else:
                orders.append(PlannedOrder(symbol, Side.BUY, -qty, "cover", px, "bullish: close short"))
                proceeds -= -qty * px
        if held.get(target, 0) > 0:
            notes.append(f"bullish: {target} already held ({held[target]:g}); not adding")
        else:
            px = price_of(target)
            budget = params.buying_power_fraction * (buying_power + proceeds)
            qty = math.floor(budget / px) if budget > 0 else 0
            if qty >= 1:
                orders.append(PlannedOrder(target, Side.BUY, float(qty), "entry", px,
                                           f"bullish: {params.buying_power_fraction:.0%} of buying power"))
            else:
                notes.append(
                    f"bullish but insufficient buying power: {budget:.2f} buys less than one "
                    f"{target} at {px:.2f}"
                )
    elif signal is Signal.BEARISH:
        qty = held.get(target, 0)
        if qty > 0:
            orders.append(PlannedOrder(target, Side.SELL, qty, "exit", price_of(target), "bearish: exit target"))
        else:
            notes.append(f"bearish: {target} not held, nothing to do")
    elif signal is Signal.NEUTRAL:
        notes.append("neutral: mixed conditions, no action")
    else:
        notes.append(f"no signal: fewer than {params.slow} hourly bars for {target}")
    return Decision(orders=orders, notes=notes, signal=signal)


# ----------------------------------------------------------------------------- backtest


def tick_signals(
    bars: pd.DataFrame,
    params: Params,
    ticks: pd.DatetimeIndex,
    lookback_sessions: int = 8,
) -> pd.Series:
    """The target's signal at each tick, as the live flow computes it.

    At a tick (a 30-minute bar start) the live `bars` asset holds the target's bars from
    the open of the `lookback_sessions`-th session back (that session included) up to
    and including the tick's bar; `indicator_frame` takes hourly closes of that window
    (the last hour partial, ending at the tick's close) and the EMAs of them. Here the
    same functions run incrementally: `hourly_closes` once per session over the day's
    window (its completed hours are the same at every tick of the day), then per tick
    `ema` over those completed hours plus the tick's close, and `classify`. The EMA
    window starts where the live one does, so it is seeded the same way.
    """
    target = bars[bars["symbol"] == params.target]
    starts = pd.DatetimeIndex(target.index)
    closes = target["close"].to_numpy(dtype="float64")
    signals = np.empty(len(ticks), dtype=object)
    local_days = pd.DatetimeIndex(ticks).tz_convert(TZ).date
    for day in dict.fromkeys(local_days):
        in_day = np.flatnonzero(local_days == day)
        first = previous_sessions(day, lookback_sessions)[0]
        lo = starts.searchsorted(session_open_close(first)[0].tz_convert("UTC"))
        hi = starts.searchsorted(ticks[in_day[-1]], side="right")
        hourly = hourly_closes(target.iloc[lo:hi])[params.target]
        hour_starts = pd.DatetimeIndex(hourly.index)
        hour_values = hourly.to_numpy(dtype="float64")
        for i in in_day:
            tick = ticks[i]
            price = closes[starts.get_loc(tick)]
            # the hours before the one holding the tick, then the tick's close
            done = hour_starts.searchsorted(tick, side="right") - 1
            series = np.append(hour_values[:done], price)
            fast = ema(series, params.fast)[-1]
            slow = ema(series, params.slow)[-1]
            signals[i] = classify(price, fast, slow).value
    return pd.Series(signals, index=ticks, name="signal")


_SIGNAL_TO_POSITION = {
    Signal.BULLISH.value: 1.0,  # be long (no pyramiding when already long)
    Signal.BEARISH.value: 0.0,  # exit the target
    Signal.NEUTRAL.value: np.nan,  # no action
    Signal.NO_DATA.value: np.nan,
}


def backtest_signals(
    bars: pd.DataFrame,
    params: Params | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    lookback_sessions: int = 8,
) -> BacktestSignals:
    """The live flow's decisions over 30-minute `bars`, tick for tick, for `run_backtest`.

    Ticks are the target's bars starting in [start, end); `bars` must also hold the
    `lookback_sessions - 1` sessions before `start` (the live window). Like the live flow
    with the paper broker, each tick decides at its close and fills at that close, buying
    floor(buying_power_fraction x cash / price) whole shares, long only. The account
    starts in cash, so the "sell everything else" leg never has work to do. `extra`
    holds each tick's signal (`signals`).
    """
    params = params or Params()
    target = bars[bars["symbol"] == params.target]
    if target.empty:
        raise ValueError(f"no bars for the target {params.target}")
    traded = bars_between(target, start, end)
    ticks = pd.DatetimeIndex(traded.index)
    if len(ticks) == 0:
        raise ValueError(f"no {params.target} bars between {start} and {end}")
    signals = tick_signals(target, params, ticks, lookback_sessions)
    position = signals.map(_SIGNAL_TO_POSITION).astype("float64").to_frame(params.target)
    config = BacktestConfig(fill="close", size_mode="fraction", size=params.buying_power_fraction,
                            whole_shares=True, allow_short=False)
    return BacktestSignals(PricePanels.from_bars(traded), position, config,
                           extra={"signals": signals})
