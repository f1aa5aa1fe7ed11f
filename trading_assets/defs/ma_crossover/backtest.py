"""The moving-average crossover's backtest over a watchlist and a date range."""

import time

import dagster as dg
import pandas as pd

from trading_assets.core.backtest import run_backtest
from trading_assets.core.strategies import ma_crossover as strategy
from trading_assets.defs.backtest_support import (
    BacktestRunConfig,
    backtest_asset,
    backtest_output,
    bad_params_fail,
    fetch_bars,
)
from trading_assets.resources.base import MarketDataResource

FLOW = strategy.FLOW


class MaCrossoverBacktestConfig(BacktestRunConfig):
    """Date range, costs, watchlist and the two moving averages."""

    start: str = "2025-01-02"
    end: str = "2025-03-31"
    symbols: list[str] = ["AAPL", "MSFT", "SPY"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "1h"
    fast: int = 5
    slow: int = 20
    allow_short: bool = False


@backtest_asset(
    FLOW,
    description="The moving-average crossover over a watchlist: long from the bar where the "
                "fast average crosses above the slow one (short below it, if allowed), filled "
                "at that bar's close; each symbol trades an equal share of the cash.",
)
def ma_crossover_backtest_asset(
    context: dg.AssetExecutionContext,
    config: MaCrossoverBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    with bad_params_fail(FLOW):
        params = strategy.Params(fast=config.fast, slow=config.slow, allow_short=config.allow_short)
    window = fetch_bars(context, market_data, config, config.symbols, config.interval)
    signals = strategy.backtest_signals(window.bars, params, start=window.start, end=window.end)
    return backtest_output(run_backtest(signals, config.costs()), config, flow=FLOW, t0=t0,
                           params=dg.MetadataValue.json(params.__dict__))
