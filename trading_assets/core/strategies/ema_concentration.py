"""Seed 002: TQQQ 10h/20h EMA concentration.

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

from trading_assets.core.bars import panel
from trading_assets.core.calendar import TZ
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
