"""Backtest assets, one per flow, in the flow's group: configurable date range and
parameters, bars from the `market_data` resource, the shared vectorised backtester
(`core.backtest`) over the strategy's own pure functions.

Each materialisation returns the trades and shows the stats table and the equity curve
(a PNG) in its metadata. Not partitioned: a backtest is one run over a chosen range.
"""

import time
from datetime import date

import dagster as dg
import pandas as pd

from trading_assets.core import calendar
from trading_assets.core.backtest import (
    BacktestConfig,
    BacktestResult,
    PricePanels,
    backtest,
    config_dict,
    ema_concentration_backtest,
)
from trading_assets.core.bars import panel
from trading_assets.core.strategies import ema_concentration as ema_strategy
from trading_assets.core.strategies import fib_retracement as fib_strategy
from trading_assets.core.strategies import ma_crossover as ma_strategy
from trading_assets.defs.reports import equity_curve_markdown, frame_markdown
from trading_assets.defs.resources import EmaConcentrationSettings, MarketDataResource

TRADE_COLUMNS = ["symbol", "direction", "qty", "entry_time", "entry_price", "exit_time",
                 "exit_price", "commission", "pnl", "exit_reason", "bars_held"]


def _session_range(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC bounds of the sessions from `start` to `end` (New York dates, inclusive)."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    if last < first:
        raise dg.Failure(f"backtest end {end} is before its start {start}")
    sessions = calendar.sessions_between(first, last)
    if not sessions:
        raise dg.Failure(f"no NYSE sessions between {start} and {end}")
    open_, _ = calendar.session_open_close(sessions[0])
    _, close = calendar.session_open_close(sessions[-1])
    return open_.tz_convert("UTC"), close.tz_convert("UTC")


def _output(result: BacktestResult, title: str, t0: float, **extra: object) -> dg.Output:
    """Trades as the value; stats table, equity-curve PNG and a trades preview as metadata."""
    stats = result.stats
    curve = pd.DataFrame({"as_of": result.equity.index, "equity": result.equity.to_numpy()})
    trades = result.trades.loc[:, TRADE_COLUMNS]
    preview = trades.tail(20).reset_index(drop=True)
    preview[["entry_time", "exit_time"]] = preview[["entry_time", "exit_time"]].astype(str)
    return dg.Output(
        trades,
        metadata={
            "stats": dg.MetadataValue.md(result.stats_markdown()),
            "equity_curve": dg.MetadataValue.md(equity_curve_markdown(curve, title)),
            "trades": dg.MetadataValue.md(frame_markdown(preview, floatfmt=".2f")),
            "total_return": stats["total_return"],
            "end_value": stats["end_value"],
            "trade_count": int(stats["trade_count"]),
            "bars": len(result.equity),
            "config": dg.MetadataValue.json(config_dict(result.config)),
            "work_ms": dg.MetadataValue.float(round((time.perf_counter() - t0) * 1000, 1)),
            **extra,
        },
    )


# ----------------------------------------------------------------------------- ema_concentration


class EmaConcentrationBacktestConfig(dg.Config):
    """Date range (New York session dates, inclusive) and parameters. Strategy fields left
    empty take the live flow's settings (`ema_concentration` resource)."""

    start: str = "2025-02-03"
    end: str = "2025-02-28"
    target: str | None = None
    fast: int | None = None
    slow: int | None = None
    buying_power_fraction: float | None = None
    lookback_sessions: int | None = None
    init_cash: float = 100_000.0
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0


@dg.asset(
    key=["ema_concentration", "backtest"],
    group_name="ema_concentration",
    kinds={"pandas"},
    description="Seed 002 over a date range with the live flow's rules and code: signals at "
                "each 30-minute tick from the same lookback window, fills at the tick's close.",
)
def ema_concentration_backtest_asset(
    context: dg.AssetExecutionContext,
    config: EmaConcentrationBacktestConfig,
    market_data: MarketDataResource,
    ema_concentration: EmaConcentrationSettings,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    live = ema_concentration
    params = ema_strategy.Params(
        target=config.target or live.target,
        fast=config.fast or live.fast,
        slow=config.slow or live.slow,
        buying_power_fraction=config.buying_power_fraction or live.buying_power_fraction,
    )
    lookback = config.lookback_sessions or live.lookback_sessions
    start, end = _session_range(config.start, config.end)
    first = calendar.previous_sessions(start.tz_convert(calendar.TZ).date(), lookback)[0]
    fetch_from = calendar.session_open_close(first)[0].tz_convert("UTC")
    bars = market_data.get().get_bars([params.target], fetch_from, end, "30min")
    context.log.info(f"{len(bars)} bars of {params.target} from {fetch_from} to {end}")
    result = ema_concentration_backtest(
        bars, params, start=start, end=end, lookback_sessions=lookback,
        init_cash=config.init_cash, slippage_bps=config.slippage_bps,
        commission_per_share=config.commission_per_share,
    )
    signals = result.extra["signals"]
    return _output(
        result, f"ema_concentration backtest {config.start}..{config.end}", t0,
        params=dg.MetadataValue.json({**params.__dict__, "lookback_sessions": lookback}),
        signal_counts=dg.MetadataValue.json(signals.value_counts().to_dict()),
    )


# ----------------------------------------------------------------------------- ma_crossover


class MaCrossoverBacktestConfig(dg.Config):
    """Date range (New York session dates, inclusive), watchlist and parameters."""

    start: str = "2025-01-02"
    end: str = "2025-03-31"
    symbols: list[str] = ["AAPL", "MSFT", "SPY"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "1h"
    fast: int = 5
    slow: int = 20
    allow_short: bool = False
    commission_bps: float = 0.0
    slippage_bps: float = 0.0
    init_cash: float = 100_000.0


@dg.asset(
    key=["ma_crossover", "backtest"],
    group_name="ma_crossover",
    kinds={"pandas"},
    description="Seed 003's SMA crossover over a watchlist: the strategy's own `signal_panel`, "
                "fills at the close of the crossing bar, an equal cash sleeve per symbol.",
)
def ma_crossover_backtest_asset(
    context: dg.AssetExecutionContext,
    config: MaCrossoverBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    params = ma_strategy.Params(fast=config.fast, slow=config.slow, allow_short=config.allow_short)
    start, end = _session_range(config.start, config.end)
    bars = market_data.get().get_bars(config.symbols, start, end, config.interval)
    if bars.empty:
        raise dg.Failure(f"no bars for {config.symbols} between {config.start} and {config.end}")
    context.log.info(f"{len(bars)} {config.interval} bars of {len(config.symbols)} symbols")
    signal = ma_strategy.signal_panel(panel(bars, "close"), params)
    cfg = BacktestConfig(
        fill="close", init_cash=config.init_cash, size_mode="fraction", size=1.0,
        allow_short=config.allow_short, slippage_bps=config.slippage_bps,
        commission_bps=config.commission_bps,
    )
    result = backtest(PricePanels.from_bars(bars), signal, cfg)
    return _output(result, f"ma_crossover backtest {config.start}..{config.end}", t0,
                   params=dg.MetadataValue.json(params.__dict__))


# ----------------------------------------------------------------------------- fib_retracement


class FibRetracementBacktestConfig(dg.Config):
    """Date range (New York session dates, inclusive), watchlist and parameters."""

    start: str = "2025-01-02"
    end: str = "2025-03-31"
    symbols: list[str] = ["SPY", "QQQ", "AAPL"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "1h"
    lookback: int = 40
    window: int = 3
    tolerance: float = 0.03
    size: float = 1.0
    allow_short: bool = True
    commission_bps: float = 0.0
    slippage_bps: float = 0.0
    init_cash: float = 100_000.0


_FIB_DIRECTION = {fib_strategy.Signal.BUY.value: 1.0, fib_strategy.Signal.SELL.value: -1.0}


@dg.asset(
    key=["fib_retracement", "backtest"],
    group_name="fib_retracement",
    kinds={"pandas"},
    description="Seed 000 over a watchlist: the strategy's `signal_history` (what each hourly "
                "tick would have seen), entries at the signal bar's close with the signal's own "
                "take-profit and stop-loss; an opposite signal reverses, a repeat is ignored.",
)
def fib_retracement_backtest_asset(
    context: dg.AssetExecutionContext,
    config: FibRetracementBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    params = fib_strategy.Params(lookback=config.lookback, window=config.window,
                                 tolerance=config.tolerance)
    start, end = _session_range(config.start, config.end)
    bars = market_data.get().get_bars(config.symbols, start, end, config.interval)
    if bars.empty:
        raise dg.Failure(f"no bars for {config.symbols} between {config.start} and {config.end}")
    prices = PricePanels.from_bars(bars)
    columns: dict[str, dict[str, pd.Series]] = {"signal": {}, "take_profit": {}, "stop_loss": {}}
    for symbol, group in bars.groupby("symbol", sort=True):
        history = fib_strategy.signal_history(group, params)
        direction = history["signal"].map(_FIB_DIRECTION).astype("float64")
        columns["signal"][symbol] = direction
        for level in ("take_profit", "stop_loss"):
            columns[level][symbol] = history[level].astype("float64").where(direction.notna())
    signal, take_profit, stop_loss = (pd.DataFrame(columns[c]) for c in columns)
    context.log.info(f"{int(signal.notna().sum().sum())} signals over {len(config.symbols)} symbols")
    cfg = BacktestConfig(
        fill="close", init_cash=config.init_cash, size_mode="fraction", size=config.size,
        allow_short=config.allow_short, slippage_bps=config.slippage_bps,
        commission_bps=config.commission_bps, block_reentry=False,
    )
    result = backtest(prices, signal, cfg, take_profit_price=take_profit, stop_loss_price=stop_loss)
    return _output(result, f"fib_retracement backtest {config.start}..{config.end}", t0,
                   params=dg.MetadataValue.json({"lookback": params.lookback,
                                                 "window": params.window,
                                                 "tolerance": params.tolerance}))
