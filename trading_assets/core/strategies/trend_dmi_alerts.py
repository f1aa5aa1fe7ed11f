"""The `trend_dmi` flow without TradingView: alerts synthesised from bars, for backtests (a proxy).

The live `trend_dmi` flow is driven by TradingView alerts: a "Trend Validator" colour
flip on a 10-minute chart and DI+/DI- crosses on a 15-minute chart. A backtest has no
alerts, so this module makes them from bars and folds them through the *real* state
machine (`trend_dmi.apply`), so the backtest and the live flow share the trading rules.

The proxy, and every choice in it:

- Trend colour: the Trend Validator is proprietary, so a documented stand-in is used:
  BLUE while the bar's close is above the EMA(`trend_period`) of closes, RED otherwise
  (close <= EMA). No colour during the EMA's warm-up. A `TrendFlip` is emitted only when
  the colour *changes* from one known colour to the other, as TradingView only fires
  the alert on a colour change; the first known colour is not an alert.
- DI crosses: `indicators.dmi(high, low, close, dmi_period)` (TA-Lib +DI/-DI). A
  `DICross` is emitted on each sign change of (+DI - -DI): plus_over_minus when it turns
  positive, minus_over_plus when it turns negative. A bar with +DI == -DI has no side;
  the cross is counted when the difference reaches the other side (leaving a tie back
  to the same side is no cross). The first known side is not an alert.
- One timeframe: the live flow watches 10-minute (trend) and 15-minute (DMI) charts;
  the proxy runs both on the bars it is given, whatever interval the caller chose (the
  backtest asset defaults to the replay's 30-minute bars). So the periods are in bars of
  that interval, not the live charts' bars.
- Alert times: an alert fires when its bar closes, so `at` is bar start + `interval`
  (nominal: an hourly bar cut short by the session close still says start + 1h) and
  `bar_time` is the bar's start. Events carry deterministic ids
  (`proxy:<symbol>:trend|dmi:<bar start>`), which is what lets the state machine apply
  a flip and a cross of the same bar (same `at`) as a tie rather than reject one.
- Same bar, both alerts: the DI cross is applied first, then the flip, so the flip (the
  seed's "entry execution is immediate upon color change") has the last word on that
  bar. The two orders differ only when the two alerts disagree (e.g. a flip to BLUE on a
  bar where DI- crosses above DI+: cross-then-flip ends LONG, flip-then-cross ends flat
  and waiting); live, their arrival order on a shared close is not defined either.
- Switch-on: `alert_log` / `trend_dmi_positions` take an optional `start`: alerts of bars
  before it are dropped (the flow was not running yet), the earlier bars only warm the
  indicators up. The state starts as a fresh deployment's: flat, no colour known, so
  the first flip after `start` enters (the state machine's own rule).
- Positions: after the events of a bar the state's position becomes the bar's signal,
  LONG +1, SHORT -1, NONE 0; bars without alerts are NaN ("keep what you have"), which
  the backtester treats as no change. The backtest fills at the bar's close
  (`fill="close"`), as the live flow fills on the alert of that close.
- A REJECTED transition would mean the synthesis broke the machine's contract (stale or
  duplicate alerts, a flip to the colour in force): it raises RuntimeError rather than
  being skipped.

Limits of the proxy: an EMA is not the Trend Validator (its flips come at other bars,
possibly more or fewer of them); one bar interval stands in for two chart timeframes;
alerts only exist at bar closes of the bars given (no intrabar alerts, no alerts while
the market is closed, e.g. futures overnight sessions); fills are at the bar's close
with no latency. Results say how the *rules* behave on such signals, not what the
TradingView-driven flow would have earned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from trading_assets.core.backtest import BacktestConfig, BacktestSignals, PricePanels, bars_between
from trading_assets.core.indicators import dmi, ema
from trading_assets.core.strategies.trend_dmi import (
    CrossDirection,
    DICross,
    Event,
    PositionState,
    TrendColor,
    TrendFlip,
    TrendState,
    apply,
)

POSITION_SIGNAL = {PositionState.LONG: 1.0, PositionState.SHORT: -1.0, PositionState.NONE: 0.0}
LOG_COLUMNS = ["symbol", "bar_time", "at", "kind", "detail", "outcome", "actions", "position",
               "trend_color", "waiting_for_reentry", "reason"]


@dataclass(frozen=True)
class ProxyParams:
    """The proxy's knobs: EMA period for the colour, DMI period, and the bars' interval."""

    trend_period: int = 20
    dmi_period: int = 14
    interval: str = "30min"

    def __post_init__(self) -> None:
        for name, minimum in (("trend_period", 1), ("dmi_period", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
        bar_length(self.interval)


def bar_length(interval: str | pd.Timedelta) -> pd.Timedelta:
    """The interval as a positive Timedelta ("30min", "1h", ...); ValueError otherwise."""
    try:
        length = pd.Timedelta(interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval: not a time interval: {interval!r}") from None
    if length <= pd.Timedelta(0):
        raise ValueError(f"interval must be positive, got {interval!r}")
    return length


def _one_symbol(bars: pd.DataFrame, symbol: str | None) -> tuple[str, pd.DataFrame]:
    if "symbol" in bars.columns:
        names = set(bars["symbol"].astype(str))
        if len(names) > 1:
            raise ValueError(f"alerts_from_bars takes one symbol's bars, got {sorted(names)}")
        if symbol is None and names:
            symbol = names.pop()
    if symbol is None:
        raise ValueError("alerts_from_bars: no symbol (no 'symbol' column and none given)")
    index = pd.DatetimeIndex(bars.index)
    if index.tz is None:
        raise ValueError("bars need a tz-aware index (bar starts)")
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError("bars must be in strictly increasing time order")
    return symbol, bars


def trend_colors(close: pd.Series, trend_period: int) -> pd.Series:
    """The proxy colour per bar: "BLUE" (close > EMA), "RED" (close <= EMA), None in warm-up."""
    line = np.asarray(ema(close.to_numpy(dtype="float64"), trend_period))
    values = close.to_numpy(dtype="float64")
    colors = np.where(values > line, TrendColor.BLUE.value, TrendColor.RED.value).astype(object)
    colors[np.isnan(line)] = None
    return pd.Series(colors, index=close.index, name="trend_color", dtype=object)


def di_sides(bars: pd.DataFrame, dmi_period: int) -> pd.Series:
    """Which DI is on top per bar: +1 (DI+ > DI-), -1 (DI- > DI+), 0 tie, NaN in warm-up."""
    plus, minus, _ = dmi(*(bars[c].to_numpy(dtype="float64") for c in ("high", "low", "close")),
                         dmi_period)
    return pd.Series(np.sign(np.asarray(plus) - np.asarray(minus)), index=bars.index,
                     name="di_side")


def _changes(values: list) -> list[int]:
    """Positions where a known (non-None) value differs from the last known one."""
    out, last = [], None
    for i, value in enumerate(values):
        if value is None:
            continue
        if last is not None and value != last:
            out.append(i)
        last = value
    return out


def alerts_from_bars(
    bars: pd.DataFrame,
    trend_period: int = 20,
    dmi_period: int = 14,
    *,
    interval: str | pd.Timedelta = "30min",
    symbol: str | None = None,
) -> list[Event]:
    """The alerts TradingView would have sent (by the proxy above), in time order.

    `bars`: one symbol's bar frame (index = bar start, tz-aware; open/high/low/close,
    a `symbol` column or the `symbol` argument), without gaps inside (indicators refuse
    NaN after warm-up). Within a bar the DI cross comes before the flip.
    """
    ProxyParams(trend_period, dmi_period, str(interval))
    symbol, bars = _one_symbol(bars, symbol)
    length = bar_length(interval)
    starts = pd.DatetimeIndex(bars.index)
    closes = bars["close"].to_numpy(dtype="float64")

    colors = [c if isinstance(c, str) else None
              for c in trend_colors(bars["close"], trend_period).tolist()]
    sides = di_sides(bars, dmi_period).to_numpy()
    side_list = [None if np.isnan(s) or s == 0 else int(s) for s in sides]

    def stamp(i: int) -> tuple[datetime, datetime]:
        start = starts[i].to_pydatetime()
        return start + length.to_pytimedelta(), start

    per_bar: dict[int, list[Event]] = {}
    for i in _changes(side_list):
        at, bar_time = stamp(i)
        direction = (CrossDirection.PLUS_OVER_MINUS if side_list[i] > 0
                     else CrossDirection.MINUS_OVER_PLUS)
        per_bar.setdefault(i, []).append(DICross(
            symbol=symbol, direction=direction, at=at, price=float(closes[i]),
            bar_time=bar_time, timeframe=str(interval),
            event_id=f"proxy:{symbol}:dmi:{bar_time.isoformat()}",
        ))
    for i in _changes(colors):
        at, bar_time = stamp(i)
        per_bar.setdefault(i, []).append(TrendFlip(
            symbol=symbol, color=TrendColor(colors[i]), at=at, price=float(closes[i]),
            bar_time=bar_time, timeframe=str(interval),
            event_id=f"proxy:{symbol}:trend:{bar_time.isoformat()}",
        ))
    return [event for i in sorted(per_bar) for event in per_bar[i]]


def alert_log(
    bars: pd.DataFrame, params: ProxyParams = ProxyParams(), *, start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Every synthesised alert of every symbol folded through `trend_dmi.apply`, one row each.

    Columns `LOG_COLUMNS`: the alert (kind "trend"/"dmi", detail = colour or direction),
    the transition's outcome, actions and reason, and the state after it. Alerts of bars
    before `start` are dropped (see "Switch-on" in the module doc).
    """
    rows = []
    for symbol, group in bars.groupby("symbol", sort=True):
        state = TrendState(str(symbol))
        events = alerts_from_bars(group, params.trend_period, params.dmi_period,
                                  interval=params.interval, symbol=str(symbol))
        for event in events:
            if start is not None and event.bar_time < start:
                continue
            transition = apply(state, event)
            if transition.rejected:
                raise RuntimeError(f"proxy alert rejected by the state machine: "
                                   f"{event!r}: {transition.reason}")
            state = transition.state
            flip = isinstance(event, TrendFlip)
            rows.append({
                "symbol": state.symbol,
                "bar_time": pd.Timestamp(event.bar_time),
                "at": pd.Timestamp(event.at),
                "kind": "trend" if flip else "dmi",
                "detail": event.color.value if flip else event.direction.value,
                "outcome": transition.outcome.value,
                "actions": " ".join(a.value for a in transition.actions),
                "position": state.position.value,
                "trend_color": None if state.trend_color is None else state.trend_color.value,
                "waiting_for_reentry": state.waiting_for_reentry,
                "reason": transition.reason,
            })
    log = pd.DataFrame(rows, columns=LOG_COLUMNS)
    if log.empty:
        log["bar_time"] = pd.DatetimeIndex([], tz="UTC")
        log["at"] = pd.DatetimeIndex([], tz="UTC")
    return log


def positions_from_log(log: pd.DataFrame, index: pd.DatetimeIndex, symbols: list[str]) -> pd.DataFrame:
    """Signal panel (index x symbols): the state's position after each bar's last alert
    as +1/-1/0, NaN on bars without alerts."""
    if not len(log):
        return pd.DataFrame(np.nan, index=index, columns=list(symbols), dtype="float64")
    last = log.groupby(["bar_time", "symbol"], sort=False)["position"].last()
    values = last.map(lambda p: POSITION_SIGNAL[PositionState(p)]).astype("float64")
    return values.unstack("symbol").reindex(index=index, columns=list(symbols))


def trend_dmi_positions(
    bars: pd.DataFrame, params: ProxyParams = ProxyParams(), *, start: pd.Timestamp | None = None
) -> pd.DataFrame:
    """The backtester's signal panel (timestamp x symbol, the bars' own timestamps) for a
    multi-symbol bar frame: proxy alerts folded through the live state machine."""
    index = pd.DatetimeIndex(sorted(set(bars.index)), name=bars.index.name)
    symbols = sorted(set(bars["symbol"].astype(str)))
    return positions_from_log(alert_log(bars, params, start=start), index, symbols)


def warmup_bars(params: ProxyParams) -> int:
    """Bars each symbol needs before `start` for its first colour and DI side to be known."""
    return max(params.trend_period, params.dmi_period + 1)


def backtest_signals(
    bars: pd.DataFrame,
    params: ProxyParams = ProxyParams(),
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    size: float = 1.0,
) -> BacktestSignals:
    """The proxy alerts folded through the live state machine, as panels for `run_backtest`.

    Bars before `start` only warm the indicators up (the flow is switched on at `start`
    with a fresh state); bars in [start, end) trade, filling at the alert bar's close,
    long and short, each entry taking `size` of the symbol's sleeve. `extra["alert_log"]`
    is `alert_log`'s frame: every alert and what the state machine did with it.
    """
    log = alert_log(bars, params, start=start)
    prices = PricePanels.from_bars(bars_between(bars, start, end))
    signal = positions_from_log(log, pd.DatetimeIndex(prices.close.index),
                                [str(c) for c in prices.close.columns])
    config = BacktestConfig(fill="close", size_mode="fraction", size=size, allow_short=True)
    return BacktestSignals(prices, signal, config, extra={"alert_log": log})
