"""The EMA concentration flow's backtest: the live flow's rules and code over a date range.

Strategy fields left empty take the live flow's settings (the `ema_concentration`
resource), so by default the backtest trades exactly what the live flow would.
"""

import time

import dagster as dg
import pandas as pd

from trading_assets.core.backtest import run_backtest
from trading_assets.core.strategies import ema_concentration as strategy
from trading_assets.defs.backtest_support import (
    BacktestRunConfig,
    backtest_asset,
    backtest_output,
    bad_params_fail,
    fetch_bars,
)
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.resources.base import MarketDataResource

FLOW = strategy.FLOW


class EmaConcentrationBacktestConfig(BacktestRunConfig):
    """Date range and costs; strategy fields left empty take the live flow's settings."""

    start: str = "2025-02-03"
    end: str = "2025-02-28"
    target: str | None = None
    fast: int | None = None
    slow: int | None = None
    buying_power_fraction: float | None = None
    lookback_sessions: int | None = None


@backtest_asset(
    FLOW,
    description="What the EMA concentration flow would have done over a date range, with its "
                "live rules and code: at every 30-minute tick it decides from the same lookback "
                "window and fills at the tick's close in whole shares (tested equal to the live "
                "flow to the cent).",
)
def ema_concentration_backtest_asset(
    context: dg.AssetExecutionContext,
    config: EmaConcentrationBacktestConfig,
    market_data: MarketDataResource,
    ema_concentration: EmaConcentrationSettings,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    live = ema_concentration
    with bad_params_fail(FLOW):
        params = strategy.Params(
            target=config.target or live.target,
            fast=config.fast or live.fast,
            slow=config.slow or live.slow,
            buying_power_fraction=config.buying_power_fraction or live.buying_power_fraction,
        )
    lookback = config.lookback_sessions or live.lookback_sessions
    # the live window is `lookback` sessions including the tick's own
    window = fetch_bars(context, market_data, config, [params.target], "30min", lookback - 1)
    signals = strategy.backtest_signals(window.bars, params, start=window.start, end=window.end,
                                        lookback_sessions=lookback)
    result = run_backtest(signals, config.costs())
    return backtest_output(
        result, config, flow=FLOW, t0=t0,
        params=dg.MetadataValue.json({**params.__dict__, "lookback_sessions": lookback}),
        signal_counts=dg.MetadataValue.json(result.extra["signals"].value_counts().to_dict()),
    )
