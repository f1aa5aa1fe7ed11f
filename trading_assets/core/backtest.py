"""Vectorised backtester: many symbols x many bars in one compiled pass.

Inputs are wide panels (timestamp x symbol) of open/high/low/close and a *signal* panel
of the same shape saying which position each symbol should hold after each bar:

    +1  be long      -1  be short      0  be flat      NaN  no opinion (keep what you have)

The rules (the reference loop in the tests spells out the same rules independently):

- Fills. `fill="next_open"`: the signal of bar t (known at its close) fills at the open of
  the symbol's next bar. `fill="close"`: it fills at the close of bar t itself, which is
  what the live flows do (decide and fill at the tick's last price).
- Costs. Buys fill at price * (1 + slippage_bps/1e4), sells at price * (1 - slippage_bps/1e4);
  commission = commission_per_share * qty + commission_bps/1e4 * qty * fill price.
- Sizing. Each symbol trades its own sleeve of cash, `init_cash / n_symbols`, so symbols
  never compete for cash and results do not depend on symbol order. `size_mode="fraction"`
  buys (or shorts) `size` x the sleeve's cash at the fill's reference price (before
  slippage); `size_mode="shares"` trades `size` shares. `whole_shares` floors the quantity
  and skips entries under one share. There is no margin check: a sleeve's cash can go
  negative if costs exceed what was left, so keep `size` below 1 when that matters.
- Exits. A position ends when the signal asks for something else (reversal = exit and
  entry in the same fill), at `max_bars` completed bars after its entry (at the same kind
  of fill), or when take-profit / stop-loss levels (fractions of the entry fill price) are
  touched by the bar's high/low. Stops are checked from the bar after a close fill, and
  from the entry bar itself after an open fill. If the bar *opens* beyond a level it
  fills at the open; if the bar's range reaches both levels the stop wins (conservative:
  we cannot know which came first). Stop-loss fills pay slippage (a market order);
  take-profit fills do not (a limit order). A strategy that prices its own brackets
  passes absolute `take_profit_price` / `stop_loss_price` panels instead: the entry made
  on bar t's signal uses bar t's levels (NaN there: the fractions, if configured).
  After a stop, take-profit or holding-period exit the same direction is not re-entered
  until the signal has left it (otherwise a level signal would re-enter on the next
  bar); `block_reentry=False` turns that off for event signals (NaN between setups).
- A bar with any NaN price is a non-trading bar for that symbol: no fills, no stop checks,
  and it does not count towards the holding period; equity marks the last valid close.
- Positions still open at the end appear in the trades with `exit_reason="open"`, marked
  at the last close and without exit costs, so the trades' P&L always sums to the equity
  change.

Stats: total return, CAGR (calendar time between the first and last bar), Sharpe
(per-bar returns, annualised by the observed bars per year, zero risk-free rate), max
drawdown (negative fraction), win rate and trade count (closed trades only), exposure
(share of bars with at least one open position). On a window under 30 days the two
annualised figures come with a warning (`annualised_warning`).

Every flow's backtest is the same two steps: its strategy module's
`backtest_signals(bars, params, start=..., end=...)` returns `BacktestSignals` (prices,
signal, its own brackets and the rules it fixes), and `run_backtest(signals, costs)`
simulates them with the user's cash and costs.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from trading_assets.core import _backtest_kernels as k
from trading_assets.core.bars import panel

FillMode = Literal["next_open", "close"]
SizeMode = Literal["fraction", "shares"]


@dataclass(frozen=True)
class BacktestConfig:
    """Every knob of a simulation; plain values so a Dagster Config can mirror it."""

    fill: FillMode = "next_open"
    init_cash: float = 100_000.0
    size_mode: SizeMode = "fraction"
    size: float = 1.0
    whole_shares: bool = False
    allow_short: bool = True
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0
    commission_bps: float = 0.0
    take_profit: float | None = None  # fraction of the entry fill, e.g. 0.05
    stop_loss: float | None = None
    max_bars: int | None = None
    # after a take-profit, stop-loss or holding-period exit, re-enter the same direction
    # only once the signal has left it (right for level signals); False for event signals
    # (one value per setup, NaN in between), where each new event may enter again
    block_reentry: bool = True

    def __post_init__(self) -> None:
        if self.fill not in ("next_open", "close"):
            raise ValueError(f"fill must be 'next_open' or 'close', got {self.fill!r}")
        if self.size_mode not in ("fraction", "shares"):
            raise ValueError(f"size_mode must be 'fraction' or 'shares', got {self.size_mode!r}")
        if not self.size > 0 or not self.init_cash > 0:
            raise ValueError("size and init_cash must be positive")
        for name in ("slippage_bps", "commission_per_share", "commission_bps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("take_profit", "stop_loss"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive fraction or None")
        if self.stop_loss is not None and self.stop_loss >= 1:
            raise ValueError("stop_loss must be below 1 (a fraction of the entry price)")
        if self.max_bars is not None and self.max_bars < 1:
            raise ValueError("max_bars must be >= 1 or None")


@dataclass(frozen=True)
class SimulationArrays:
    """The kernel's raw output: trade records (see `TRADE_FIELDS`), equity, open count."""

    trades: np.ndarray
    equity: np.ndarray
    open_count: np.ndarray


TRADE_FIELDS = k.TRADE_FIELDS
EXIT_REASONS = k.REASONS


def _as_panel(values: np.ndarray | pd.DataFrame, name: str, shape: tuple[int, ...] | None):
    """float64, 2-D, column-major (the kernel walks down each symbol's column)."""
    arr = np.asarray(values, dtype="float64")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (timestamp x symbol), got {arr.ndim}-D")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape} like close")
    return np.asfortranarray(arr)


def simulate_arrays(
    close: np.ndarray,
    signal: np.ndarray,
    config: BacktestConfig = BacktestConfig(),
    *,
    open: np.ndarray | None = None,
    high: np.ndarray | None = None,
    low: np.ndarray | None = None,
    take_profit_price: np.ndarray | None = None,
    stop_loss_price: np.ndarray | None = None,
) -> SimulationArrays:
    """Numpy-level entry point (the fast path): panels in, raw records out.

    Panels are timestamp x symbol; column-major (Fortran-ordered) ones are used as they
    are, others are copied into that layout first. `open` is required for
    `fill="next_open"`, `high`/`low` for take-profit/stop-loss. `take_profit_price` /
    `stop_loss_price` give absolute levels for an entry made on the signal of that bar
    (NaN: fall back to the config's fractions, if any); they need `high`/`low` too.
    """
    close_a = _as_panel(close, "close", None)
    shape = close_a.shape
    sig = _as_panel(signal, "signal", shape)
    if config.fill == "next_open" and open is None:
        raise ValueError("fill='next_open' needs the open panel")
    has_levels = take_profit_price is not None or stop_loss_price is not None
    stops = config.take_profit is not None or config.stop_loss is not None or has_levels
    if stops and (high is None or low is None):
        raise ValueError("take_profit/stop_loss need the high and low panels")
    open_a = close_a if open is None else _as_panel(open, "open", shape)
    high_a = close_a if high is None else _as_panel(high, "high", shape)
    low_a = close_a if low is None else _as_panel(low, "low", shape)
    no_levels = np.full((1, 1), np.nan, order="F")
    tp_a = no_levels
    sl_a = no_levels
    if has_levels:
        tp_a = np.full(shape, np.nan, order="F") if take_profit_price is None else _as_panel(
            take_profit_price, "take_profit_price", shape)
        sl_a = np.full(shape, np.nan, order="F") if stop_loss_price is None else _as_panel(
            stop_loss_price, "stop_loss_price", shape)
    params = (
        config.fill == "close",
        config.init_cash / shape[1],
        float(config.size),
        config.size_mode == "shares",
        bool(config.whole_shares),
        config.slippage_bps / 10_000.0,
        float(config.commission_per_share),
        config.commission_bps / 10_000.0,
        float(config.take_profit or 0.0),
        float(config.stop_loss or 0.0),
        int(config.max_bars or 0),
        bool(config.allow_short),
        bool(config.block_reentry),
    )
    panels = (open_a, high_a, low_a, close_a, sig)
    bounds = _chunks(shape)
    if len(bounds) == 1:
        return SimulationArrays(*k.simulate(*panels, tp_a, sl_a, has_levels, *params))

    def run(lo_hi: tuple[int, int]):
        lo, hi = lo_hi
        levels = (tp_a[:, lo:hi], sl_a[:, lo:hi]) if has_levels else (tp_a, sl_a)
        return k.simulate(*(p[:, lo:hi] for p in panels), *levels, has_levels, *params)

    workers = min(len(bounds), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, bounds))
    for (lo, _), (trades, _, _) in zip(bounds, parts, strict=True):
        trades[:, k.TR_SYMBOL] += lo
    equity = parts[0][1].copy()
    open_count = parts[0][2].copy()
    for _, eq, count in parts[1:]:
        equity += eq
        open_count += count
    return SimulationArrays(np.concatenate([p[0] for p in parts]), equity, open_count)


# Symbols never interact, so a big panel runs as column chunks on threads (the kernel
# releases the GIL). The chunking depends only on the panel's shape, so results do not
# depend on the machine; the chunks' equities are summed in chunk order.
CELLS_PER_CHUNK = 1_000_000
MAX_CHUNKS = 8


def _chunks(shape: tuple[int, int]) -> list[tuple[int, int]]:
    n_bars, n_sym = shape
    n = max(1, min(MAX_CHUNKS, n_sym, (n_bars * n_sym) // CELLS_PER_CHUNK))
    edges = np.linspace(0, n_sym, n + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


# ----------------------------------------------------------------------------- pandas level


@dataclass(frozen=True)
class PricePanels:
    """Aligned timestamp x symbol panels of one bar frame."""

    open: pd.DataFrame
    high: pd.DataFrame
    low: pd.DataFrame
    close: pd.DataFrame

    @classmethod
    def from_bars(cls, bars: pd.DataFrame) -> PricePanels:
        """Pivot a bar frame (see `core.bars`) into panels on one shared index."""
        close = panel(bars, "close")
        return cls(
            **{c: panel(bars, c).reindex(index=close.index, columns=close.columns)
               for c in ("open", "high", "low")},
            close=close,
        )


@dataclass
class BacktestResult:
    """Trades, the equity curve, how many positions were open per bar, and the config."""

    trades: pd.DataFrame
    equity: pd.Series
    open_positions: pd.Series
    config: BacktestConfig
    extra: dict = field(default_factory=dict)

    @property
    def stats(self) -> dict[str, float]:
        return compute_stats(self.equity, self.trades, self.open_positions, self.config.init_cash)

    def stats_markdown(self) -> str:
        """The stats as a two-column markdown table (for Dagster metadata, reports)."""
        return stats_markdown(self.stats)


def _trade_frame(records: np.ndarray, index: pd.DatetimeIndex, symbols: list[str]) -> pd.DataFrame:
    raw = pd.DataFrame(records, columns=list(TRADE_FIELDS))
    reasons = np.asarray(EXIT_REASONS, dtype=object)[raw["exit_reason"].to_numpy(dtype=np.int64)]
    sym_idx = raw["symbol"].to_numpy(dtype=np.int64)
    entry = raw["entry_bar"].to_numpy(dtype=np.int64)
    exit_ = raw["exit_bar"].to_numpy(dtype=np.int64)
    out = pd.DataFrame(
        {
            "symbol": np.asarray(symbols, dtype=object)[sym_idx],
            "direction": raw["direction"].astype(np.int64),
            "qty": raw["qty"],
            "entry_time": index[entry],
            "entry_price": raw["entry_price"],
            "exit_time": index[exit_],
            "exit_price": raw["exit_price"],
            "commission": raw["commission"],
            "slippage": raw["slippage"],
            "gross_pnl": raw["gross_pnl"],
            "pnl": raw["pnl"],
            "exit_reason": reasons,
            "bars_held": raw["bars_held"].astype(np.int64),
            "entry_ref": raw["entry_ref"],
            "exit_ref": raw["exit_ref"],
        }
    )
    return out.sort_values(["entry_time", "symbol"], kind="stable").reset_index(drop=True)


def backtest(
    prices: PricePanels,
    signal: pd.DataFrame,
    config: BacktestConfig = BacktestConfig(),
    *,
    take_profit_price: pd.DataFrame | None = None,
    stop_loss_price: pd.DataFrame | None = None,
) -> BacktestResult:
    """Simulate `signal` (timestamp x symbol, +1/-1/0/NaN) over `prices` (see module doc).

    `take_profit_price` / `stop_loss_price` (same layout) are absolute exit levels for the
    entries their bar's signal makes, as a strategy that prices its own brackets gives.
    """
    close = prices.close

    def aligned(frame: pd.DataFrame | None) -> np.ndarray | None:
        if frame is None:
            return None
        return frame.reindex(index=close.index, columns=close.columns).to_numpy(dtype="float64")

    raw = simulate_arrays(
        close.to_numpy(dtype="float64"),
        aligned(signal),
        config,
        open=prices.open.to_numpy(dtype="float64"),
        high=prices.high.to_numpy(dtype="float64"),
        low=prices.low.to_numpy(dtype="float64"),
        take_profit_price=aligned(take_profit_price),
        stop_loss_price=aligned(stop_loss_price),
    )
    index = pd.DatetimeIndex(close.index)
    symbols = [str(c) for c in close.columns]
    return BacktestResult(
        trades=_trade_frame(raw.trades, index, symbols),
        equity=pd.Series(raw.equity, index=index, name="equity"),
        open_positions=pd.Series(raw.open_count, index=index, name="open_positions"),
        config=config,
    )


def crossover_signal(
    fast: np.ndarray, slow: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """+1 where fast > slow, -1 where below, 0 when equal, NaN during warm-up.

    A level signal for a stop-and-reverse system; compiled, keeps the input's layout.
    `out` may be `fast` itself (element-wise, so overwriting is safe).
    """
    f = np.asarray(fast, dtype="float64")
    s = np.asarray(slow, dtype="float64")
    if f.shape != s.shape:
        raise ValueError(f"fast {f.shape} and slow {s.shape} differ in shape")
    if out is None:
        out = np.empty_like(f)
    if f.ndim == 1:
        k.crossover(f[:, None], s[:, None], out[:, None])
        return out
    return k.crossover(f, s, out)


# ----------------------------------------------------------------------------- stats


def compute_stats(
    equity: pd.Series,
    trades: pd.DataFrame,
    open_positions: pd.Series | None = None,
    init_cash: float | None = None,
) -> dict[str, float]:
    """Headline numbers of a run (definitions in the module docstring)."""
    values = equity.to_numpy(dtype="float64")
    if init_cash is None:
        init_cash = float(values[0]) if len(values) else float("nan")
    start_value = float(init_cash)
    end_value = float(values[-1]) if len(values) else start_value
    total_return = end_value / start_value - 1.0
    years = window_days(pd.DatetimeIndex(equity.index)) / 365.25
    cagr = float("nan")
    if years > 0 and end_value > 0:
        # exp/log form: annualising a big return over hours overflows `**`; report inf.
        growth = math.log(end_value / start_value) / years
        cagr = math.expm1(growth) if growth < 700 else float("inf")
    curve = np.concatenate([[start_value], values])
    rets = curve[1:] / curve[:-1] - 1.0
    std = rets.std(ddof=1) if len(rets) > 1 else float("nan")
    per_year = len(rets) / years if years > 0 else float("nan")
    sharpe = float(rets.mean() / std * math.sqrt(per_year)) if std and std > 0 else float("nan")
    peak = np.maximum.accumulate(curve)
    max_dd = float((curve / peak - 1.0).min())
    closed = trades[trades["exit_reason"] != "open"] if len(trades) else trades
    n_closed = len(closed)
    win_rate = float((closed["pnl"] > 0).mean()) if n_closed else float("nan")
    exposure = (
        float((open_positions.to_numpy() > 0).mean())
        if open_positions is not None and len(open_positions)
        else float("nan")
    )
    return {
        "start_value": start_value,
        "end_value": end_value,
        "total_return": float(total_return),
        "cagr": float(cagr),
        "sharpe": sharpe,
        "max_drawdown": max_dd,
        "win_rate": win_rate,
        "exposure": exposure,
        "trade_count": float(n_closed),
        "open_positions_at_end": float(len(trades) - n_closed),
        "total_commission": float(trades["commission"].sum()) if len(trades) else 0.0,
    }


_PERCENT = {"total_return", "cagr", "max_drawdown", "win_rate", "exposure"}
_MONEY = {"start_value", "end_value", "total_commission"}
MIN_ANNUALISED_DAYS = 30.0


def stats_markdown(
    stats: Mapping[str, float],
    *,
    currency: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> str:
    """Stats as a markdown table: percentages for ratios, counts as integers, money to the
    cent (with `currency` after it when given). `notes` adds a third column saying what a
    stat means, for readers who do not know the definitions by heart."""
    header = "| stat | value |" + (" note |" if notes is not None else "")
    lines = [header, "|---|---|" + ("---|" if notes is not None else "")]
    for key, value in stats.items():
        if value != value:
            text = "n/a"
        elif key in _PERCENT:
            text = f"{value:.2%}"
        elif key.endswith(("count", "at_end")):
            text = f"{int(value)}"
        elif key == "sharpe":
            text = f"{value:.2f}"
        elif key in _MONEY and currency:
            text = f"{value:,.2f} {currency}"
        else:
            text = f"{value:,.2f}"
        row = f"| {key} | {text} |"
        if notes is not None:
            row += f" {notes.get(key, '')} |"
        lines.append(row)
    return "\n".join(lines)


def window_days(index: pd.Index) -> float:
    """Calendar days from the first to the last bar: the time CAGR and Sharpe annualise."""
    if len(index) < 2:
        return 0.0
    return (index[-1] - index[0]).total_seconds() / 86_400.0


def annualised_warning(index: pd.Index, min_days: float = MIN_ANNUALISED_DAYS) -> str | None:
    """Why CAGR and Sharpe should not be read as yearly figures, on a window too short to
    say anything about a year (None when the window is long enough)."""
    days = window_days(index)
    if days >= min_days:
        return None
    return (f"CAGR and Sharpe are annualised from {days:.1f} days of bars (less than {min_days:g}): "
            "they extrapolate a few days to a year and say little about it")


def config_dict(config: BacktestConfig) -> dict:
    """The config as a plain dict (for metadata and JSON)."""
    return asdict(config)




# ----------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class CashAndCosts:
    """The account side of a backtest, the same for every flow: the starting cash and what
    trading costs (see the module docstring for how each is charged)."""

    init_cash: float = 100_000.0
    slippage_bps: float = 0.0
    commission_bps: float = 0.0
    commission_per_share: float = 0.0

    @property
    def round_trip_fraction(self) -> float:
        """What an entry plus an exit cost as a fraction of the price: slippage and the
        commission in bps, twice (a per-share commission depends on the price, so it is
        charged on every fill but not counted here)."""
        return 2.0 * (self.slippage_bps + self.commission_bps) / 10_000.0


@dataclass(frozen=True)
class BacktestSignals:
    """A strategy's side of a backtest, in one shape for every flow.

    `prices` are the bars traded over (warm-up bars left out), `signal` what to hold
    after each bar (timestamp x symbol, +1/-1/0/NaN, see the module docstring),
    `take_profit` / `stop_loss` the strategy's own bracket prices (absolute, on the bars
    whose signal enters), `config` the trading rules the strategy fixes (fill, sizing,
    shorts, holding period, re-entry); its cash and cost fields are replaced by the ones
    `run_backtest` is given. `trade_tags` (columns entry_time, symbol and any others) are
    joined onto the trades opened at that bar, e.g. the model that made the forecast;
    `extra` is what else the strategy wants shown (signals, alert log, models...).
    """

    prices: PricePanels
    signal: pd.DataFrame
    config: BacktestConfig
    take_profit: pd.DataFrame | None = None
    stop_loss: pd.DataFrame | None = None
    trade_tags: pd.DataFrame | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def run_backtest(signals: BacktestSignals, costs: CashAndCosts = CashAndCosts()) -> BacktestResult:
    """Simulate a strategy's signals with the given cash and costs (every flow's backtest)."""
    config = replace(signals.config, **asdict(costs))
    result = backtest(signals.prices, signals.signal, config,
                      take_profit_price=signals.take_profit, stop_loss_price=signals.stop_loss)
    if signals.trade_tags is not None:
        result.trades = result.trades.merge(signals.trade_tags, on=["entry_time", "symbol"],
                                            how="left", validate="many_to_one")
    result.extra.update(signals.extra)
    return result


def bars_between(bars: pd.DataFrame, start: pd.Timestamp | None, end: pd.Timestamp | None) -> pd.DataFrame:
    """The rows of a bar frame starting in [start, end) (None: unbounded on that side)."""
    mask = np.ones(len(bars), dtype=bool)
    if start is not None:
        mask &= bars.index >= pd.Timestamp(start)
    if end is not None:
        mask &= bars.index < pd.Timestamp(end)
    return bars[mask]
