"""The `fib_retracement` flow: Fibonacci retracement over the last 40 bars, with take-profit and stop-loss.

Over the last `lookback` (40) bars, find the swing points (`indicators.peaks_troughs`).
BUY when price swung up (trough L, then peak H) and the pull-back has just formed a
trough T at a Fibonacci retracement level of that swing; SELL on the mirror image (peak
H, trough L, then a bounce that has just formed a peak P at a level). The signal carries
entry, take-profit, stop-loss, the three swing points and the level used.

Choices where the seed is vague (each is a condition in `evaluate`, in this order):
1. Data: at least `lookback` bars, else NONE. Only the last `lookback` bars are looked
   at, so a swing point needs a full `window` bars on both sides inside them.
2. Swing points: a peak is a high strictly above every high within `window` bars each
   side; a trough likewise with lows (see `peaks_troughs`). A bar that is both (an
   outside bar) is ambiguous and dropped. Consecutive points of the same kind collapse
   to the most extreme one (the higher peak / lower trough; the earlier on a tie), so
   the sequence alternates.
3. Pattern: the last three swing points are trough-peak-trough (BUY candidate) or
   peak-trough-peak (SELL candidate); the swing (L to H) must have positive height.
4. Retracement depth, as a fraction of the swing: BUY (H - T) / (H - L), SELL
   (P - L) / (H - L). It must lie within `tolerance` (in swing fractions) of one of
   `levels` (0.382, 0.5, 0.618 by default); the nearest level is "the level used".
   A full retracement (T at or below L; P at or above H) never qualifies.
5. Freshness: the retracement point is only known `window` bars after it happened; the
   signal fires only if that confirmation happened within the last `fresh_bars` bars
   (default 1: on the newest bar). So an hourly tick acts once per setup, and a rerun of
   the same tick gives the same answer.
6. Confirmation: no bar since the retracement point has traded back through it (BUY:
   every later low above T's low; SELL: every later high below P's high), the last close
   has bounced off it, and the close has not already passed the take-profit.
7. Prices: entry is the last close. Take-profit and stop-loss are Fibonacci levels of
   the same swing (`fib_levels`): by default take-profit at ratio 0 (back to the swing
   end: H for BUY, L for SELL) and stop-loss at ratio 1 (the swing start: L for BUY, H
   for SELL), where the swing's structure is broken and the thesis is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd

from trading_assets.core.backtest import BacktestConfig, BacktestSignals, PricePanels, bars_between
from trading_assets.core.indicators import FIB_RATIOS, fib_levels, peaks_troughs
from trading_assets.core.ports import Side
from trading_assets.core.tick import PlannedOrder, TickPlan

FLOW = "fib_retracement"


class Signal(StrEnum):
    BUY = "buy"
    SELL = "sell"
    NONE = "none"


@dataclass(frozen=True)
class Params:
    lookback: int = 40
    window: int = 3
    levels: tuple[float, ...] = (0.382, 0.5, 0.618)
    tolerance: float = 0.03
    fresh_bars: int = 1
    take_profit_ratio: float = 0.0
    stop_loss_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.lookback < 2 * self.window + 3:
            raise ValueError(
                f"need window >= 1 and lookback >= 2*window+3 to fit three swing points, "
                f"got lookback={self.lookback} window={self.window}"
            )
        if not self.levels or not all(0 < lv < 1 for lv in self.levels):
            raise ValueError(f"levels must be ratios strictly between 0 and 1, got {self.levels}")
        if not 0 <= self.tolerance < 0.5:
            raise ValueError(f"tolerance must be in [0, 0.5), got {self.tolerance}")
        if self.fresh_bars < 1:
            raise ValueError(f"fresh_bars must be >= 1, got {self.fresh_bars}")
        for name in ("take_profit_ratio", "stop_loss_ratio"):
            if getattr(self, name) not in FIB_RATIOS:
                raise ValueError(f"{name} must be one of {FIB_RATIOS}, got {getattr(self, name)}")
        if not self.take_profit_ratio < min(self.levels) <= max(self.levels) < self.stop_loss_ratio:
            raise ValueError("need take_profit_ratio < every level < stop_loss_ratio")


@dataclass(frozen=True)
class SwingPoint:
    kind: str  # "peak" (price = that bar's high) | "trough" (price = that bar's low)
    at: Any  # the bar's timestamp (or position when no timestamps were given)
    price: float
    position: int  # row within the bars given to `evaluate`


@dataclass(frozen=True)
class FibSignal:
    signal: Signal
    reason: str
    as_of: Any = None
    entry: float | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    level: float | None = None  # the Fibonacci ratio the retracement reached
    level_price: float | None = None
    depth: float | None = None  # the retracement actually reached, as a swing fraction
    swing_start: SwingPoint | None = None  # BUY: trough L; SELL: peak H
    swing_end: SwingPoint | None = None  # BUY: peak H; SELL: trough L
    retracement: SwingPoint | None = None  # BUY: trough T; SELL: peak P

    def to_record(self) -> dict[str, Any]:
        """Flat dict (one row of a signals frame): swing points as *_at/*_price."""
        scalars = ("reason", "as_of", "entry", "take_profit", "stop_loss", "level",
                   "level_price", "depth")
        out: dict[str, Any] = {"signal": self.signal.value}
        out.update({k: getattr(self, k) for k in scalars})
        for name in ("swing_start", "swing_end", "retracement"):
            point = getattr(self, name)
            out[f"{name}_at"] = None if point is None else point.at
            out[f"{name}_price"] = None if point is None else point.price
        return out


def _swing_points(
    high: np.ndarray, low: np.ndarray, window: int, offset: int, stamps: list
) -> list[SwingPoint]:
    """Alternating swing points (rule 2); `offset` maps window rows to input rows."""
    is_peak, is_trough = peaks_troughs(high, low, window)
    is_peak, is_trough = np.asarray(is_peak), np.asarray(is_trough)
    points: list[SwingPoint] = []
    for i in np.flatnonzero(is_peak ^ is_trough):
        kind = "peak" if is_peak[i] else "trough"
        price = float(high[i] if is_peak[i] else low[i])
        point = SwingPoint(kind, stamps[offset + i], price, int(offset + i))
        if points and points[-1].kind == kind:
            prev = points[-1]
            more_extreme = price > prev.price if kind == "peak" else price < prev.price
            if more_extreme:
                points[-1] = point
            continue
        points.append(point)
    return points


def evaluate(
    high: np.ndarray | pd.Series,
    low: np.ndarray | pd.Series,
    close: np.ndarray | pd.Series,
    params: Params | None = None,
    timestamps: pd.DatetimeIndex | np.ndarray | None = None,
) -> FibSignal:
    """The signal for the newest bar of one symbol (oldest bar first in the inputs)."""
    params = params or Params()
    hi, lo, cl = (np.asarray(v, dtype="float64") for v in (high, low, close))
    n = len(cl)
    if not len(hi) == len(lo) == n:
        raise ValueError(f"high/low/close lengths differ: {len(hi)}/{len(lo)}/{n}")
    if timestamps is None and isinstance(close, pd.Series):
        timestamps = close.index
    stamps = list(range(n)) if timestamps is None else list(timestamps)
    if len(stamps) != n:
        raise ValueError(f"{len(stamps)} timestamps for {n} bars")
    as_of = stamps[-1] if n else None

    def none(why: str, **kw: Any) -> FibSignal:
        return FibSignal(Signal.NONE, why, as_of, **kw)

    if n < params.lookback:  # rule 1
        return none(f"only {n} bars; need the last {params.lookback}")
    start = n - params.lookback
    window_hi, window_lo = hi[start:], lo[start:]
    finite = np.isfinite(window_hi).all() and np.isfinite(window_lo).all()
    if not (finite and math.isfinite(cl[-1])):
        return none(f"NaN/inf in the last {params.lookback} bars")

    points = _swing_points(window_hi, window_lo, params.window, start, stamps)  # rule 2
    if len(points) < 3:
        return none(f"{len(points)} swing points in the last {params.lookback} bars; need 3")
    first, second, third = points[-3:]  # rule 3
    buy = first.kind == "trough"
    swing_low, swing_high = (first, second) if buy else (second, first)
    height = swing_high.price - swing_low.price
    pattern = "-".join(p.kind for p in (first, second, third))
    if height <= 0:
        return none(f"{pattern}: swing has no height")
    # rule 4
    pulled = swing_high.price - third.price if buy else third.price - swing_low.price
    depth = pulled / height
    found = dict(swing_start=first, swing_end=second, retracement=third, depth=depth)
    if not 0 < depth < 1:
        return none(f"{pattern}: depth {depth:.3f} is not a partial retracement", **found)
    level = min(params.levels, key=lambda lv: (abs(depth - lv), lv))
    if abs(depth - level) > params.tolerance:
        return none(
            f"{pattern}: retracement depth {depth:.3f} is not within {params.tolerance} "
            f"of a level {params.levels}",
            **found,
        )
    confirmed = third.position + params.window  # rule 5
    age = (n - 1) - confirmed
    if age >= params.fresh_bars:
        return none(f"{pattern}: retracement point confirmed {age} bars ago (stale)", **found)

    levels = fib_levels(swing_low.price, swing_high.price, "up" if buy else "down")
    take_profit = float(levels[params.take_profit_ratio])
    stop_loss = float(levels[params.stop_loss_ratio])
    level_price = float(levels[level])
    entry = float(cl[-1])
    found.update(level=level, level_price=level_price)
    after = slice(third.position + 1, n)  # bars since the retracement point
    if buy:  # rule 6
        if (lo[after] <= third.price).any():
            return none(f"price traded back to/below the trough {third.price:g} since", **found)
        if not entry > third.price:
            return none(f"close {entry:g} has not bounced off the trough {third.price:g}", **found)
        if not entry < take_profit:
            return none(f"close {entry:g} already at/above take-profit {take_profit:g}", **found)
    else:
        if (hi[after] >= third.price).any():
            return none(f"price traded back to/above the peak {third.price:g} since", **found)
        if not entry < third.price:
            return none(f"close {entry:g} has not turned below the peak {third.price:g}", **found)
        if not entry > take_profit:
            return none(f"close {entry:g} already at/below take-profit {take_profit:g}", **found)
    signal = Signal.BUY if buy else Signal.SELL
    reason = (
        f"{pattern}: {'pull-back' if buy else 'bounce'} to the {level:.1%} level "
        f"({level_price:g}, reached {depth:.3f}) of the swing {swing_low.price:g}-"
        f"{swing_high.price:g}, confirmed on the newest bar"
    )
    return FibSignal(
        signal, reason, as_of, entry=entry, take_profit=take_profit, stop_loss=stop_loss, **found
    )


def evaluate_bars(bars: pd.DataFrame, params: Params | None = None) -> FibSignal:
    """`evaluate` over one symbol's bar frame (core.bars schema)."""
    if bars["symbol"].nunique() > 1:
        raise ValueError("evaluate_bars takes one symbol; use signals_frame for many")
    bars = bars.sort_index(kind="stable")
    return evaluate(bars["high"], bars["low"], bars["close"], params, bars.index)


def signals_frame(bars: pd.DataFrame, params: Params | None = None) -> pd.DataFrame:
    """One row per symbol of a bar frame: the signal and all its price points."""
    groups = bars.groupby("symbol", sort=True)
    rows = {str(s): evaluate_bars(g, params).to_record() for s, g in groups}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "symbol"
    return out


SWING_COLUMNS = ("symbol", "kind", "at", "price", "position")


def swings_frame(bars: pd.DataFrame, params: Params | None = None) -> pd.DataFrame:
    """Every swing point `evaluate` sees (rule 2): per symbol, the alternating peaks and
    troughs of its last `lookback` bars, with the bar's time and price and its position
    counted back from the newest bar (0 = the newest)."""
    params = params or Params()
    rows = []
    for symbol, group in bars.groupby("symbol", sort=True):
        group = group.sort_index(kind="stable").iloc[-params.lookback:]
        hi, lo = (group[c].to_numpy(dtype="float64") for c in ("high", "low"))
        if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
            continue  # the bars' check names the NaN; evaluate says NONE
        n = len(group)
        for point in _swing_points(hi, lo, params.window, 0, list(group.index)):
            rows.append((str(symbol), point.kind, point.at, point.price, n - 1 - point.position))
    return pd.DataFrame(rows, columns=list(SWING_COLUMNS))


def signal_history(bars: pd.DataFrame, params: Params | None = None) -> pd.DataFrame:
    """`evaluate` as of every bar of one symbol (row t sees only bars up to t).

    For backtests: the hourly flow would have produced exactly these rows, one per tick.
    """
    params = params or Params()
    bars = bars.sort_index(kind="stable")
    hi, lo, cl = (bars[c].to_numpy(dtype="float64") for c in ("high", "low", "close"))
    stamps = bars.index
    rows = []
    for t in range(len(bars)):
        # evaluate only ever looks at the last `lookback` bars, so pass just those.
        s = slice(max(0, t + 1 - params.lookback), t + 1)
        rows.append(evaluate(hi[s], lo[s], cl[s], params, stamps[s]).to_record())
    return pd.DataFrame(rows, index=stamps)


def plan(signals: pd.DataFrame, sizes: Mapping[str, float], positions: Mapping[str, float]) -> TickPlan:
    """The orders one hourly tick places, per market, from its signals frame row: the
    backtester's rules for an event signal with brackets (`backtest_signals`):

    - BUY or SELL while flat: enter `sizes[epic]` at the close with the signal's
      take-profit and stop-loss attached (they then live at the broker);
    - the opposite of what is held: close it (its brackets go with it) and enter;
    - the same as what is held: ignored (one position per market);
    - none: nothing (a held position stays with its brackets until one fires).
    """
    orders: list[PlannedOrder] = []
    notes: list[str] = []
    for epic, row in signals.sort_index().iterrows():
        epic = str(epic)
        signal = Signal(row["signal"])
        held = float(positions.get(epic, 0.0))
        if signal is Signal.NONE:
            notes.append(f"{epic}: none: {row['reason']}")
            continue
        want = 1.0 if signal is Signal.BUY else -1.0
        if held * want > 0:
            notes.append(f"{epic}: {signal.value}: already {'long' if held > 0 else 'short'} {abs(held):g}; "
                         "repeat ignored")
            continue
        entry = float(row["entry"])
        side = Side.BUY if signal is Signal.BUY else Side.SELL
        if held:
            orders.append(PlannedOrder(epic, side, abs(held), "exit", entry,
                                       f"{signal.value}: close the {'long' if held > 0 else 'short'} to reverse"))
        tp, sl = float(row["take_profit"]), float(row["stop_loss"])
        orders.append(PlannedOrder(epic, side, float(sizes[epic]), "entry", entry, str(row["reason"]),
                                   take_profit=tp, stop_loss=sl))
        notes.append(f"{epic}: {signal.value} {sizes[epic]:g} at {entry:g}, take-profit {tp:g}, stop-loss {sl:g}")
    return TickPlan(orders=orders, notes=notes)


_DIRECTION = {Signal.BUY.value: 1.0, Signal.SELL.value: -1.0}


def backtest_signals(
    bars: pd.DataFrame,
    params: Params | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    size: float = 1.0,
    allow_short: bool = True,
    size_mode: str = "fraction",
) -> BacktestSignals:
    """`signal_history` of every symbol as panels for `run_backtest`.

    What each hourly tick would have seen: a BUY (+1) or SELL (-1) on its signal bar,
    entered at that bar's close with the signal's own take-profit and stop-loss, NaN
    elsewhere (an event signal: an opposite signal reverses, a repeat is ignored, and a
    new setup may enter again after an exit). `size` is the share of a symbol's sleeve
    each entry takes, or (`size_mode="shares"`) the deal size the live flow trades.
    History is taken over all the bars given; only [start, end) trades.
    """
    params = params or Params()
    columns: dict[str, dict[str, pd.Series]] = {"signal": {}, "take_profit": {}, "stop_loss": {}}
    for symbol, group in bars.groupby("symbol", sort=True):
        history = signal_history(group, params)
        direction = history["signal"].map(_DIRECTION).astype("float64")
        columns["signal"][symbol] = direction
        for level in ("take_profit", "stop_loss"):
            columns[level][symbol] = history[level].astype("float64").where(direction.notna())
    prices = PricePanels.from_bars(bars_between(bars, start, end))
    signal, take_profit, stop_loss = (
        pd.DataFrame(columns[c]).reindex(prices.close.index) for c in columns)
    config = BacktestConfig(fill="close", size_mode=size_mode, size=size, allow_short=allow_short,  # type: ignore[arg-type]
                            block_reentry=False)
    return BacktestSignals(prices, signal, config, take_profit=take_profit, stop_loss=stop_loss)
