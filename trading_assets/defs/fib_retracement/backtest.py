"""The Fibonacci retracement flow's backtest over a watchlist and a date range."""

import time

import dagster as dg
import pandas as pd

from trading_assets.core.backtest import run_backtest
from trading_assets.core.strategies import fib_retracement as strategy
from trading_assets.defs.backtest_support import (
    BacktestRunConfig,
    backtest_asset,
    backtest_output,
    bad_params_fail,
    fetch_bars,
)
from trading_assets.resources.base import MarketDataResource

FLOW = strategy.FLOW


class FibRetracementBacktestConfig(BacktestRunConfig):
    """Date range, costs, watchlist and the swing-finding parameters."""

    start: str = "2025-01-02"
    end: str = "2025-03-31"
    symbols: list[str] = ["SPY", "QQQ", "AAPL"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "1h"
    lookback: int = 40
    window: int = 3
    tolerance: float = 0.03
    size: float = 1.0
    allow_short: bool = True


@backtest_asset(
    FLOW,
    description="The Fibonacci retracement flow over a watchlist: what each hourly tick would "
                "have signalled, entered at the signal bar's close with the signal's own "
                "take-profit and stop-loss; an opposite signal reverses, a repeat is ignored.",
)
def fib_retracement_backtest_asset(
    context: dg.AssetExecutionContext,
    config: FibRetracementBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    with bad_params_fail(FLOW):
        params = strategy.Params(lookback=config.lookback, window=config.window,
                                 tolerance=config.tolerance)
    window = fetch_bars(context, market_data, config, config.symbols, config.interval)
    with bad_params_fail(FLOW):  # size
        signals = strategy.backtest_signals(window.bars, params, start=window.start, end=window.end,
                                            size=config.size, allow_short=config.allow_short)
    context.log.info(f"{int(signals.signal.notna().sum().sum())} signals over "
                     f"{len(config.symbols)} symbols")
    return backtest_output(
        run_backtest(signals, config.costs()), config, flow=FLOW, t0=t0,
        params=dg.MetadataValue.json({"lookback": params.lookback, "window": params.window,
                                      "tolerance": params.tolerance}),
    )
