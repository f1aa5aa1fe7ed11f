"""The trend + DMI flow's backtest, on alerts rebuilt from bars.

The live flow acts on TradingView alerts, which a backtest does not have. The alerts
are synthesised from bars by `core.strategies.trend_dmi_alerts` (a documented proxy:
close vs EMA for the Trend Validator's colour, sign changes of +DI - -DI for the DI
crosses, both on the configured bar interval rather than the live 10/15-minute charts),
folded per symbol through `trend_dmi.apply` (the same state machine the live flow
runs) and simulated by the shared backtester with fills at the alert bar's close.

Bars from `warmup_sessions` sessions before `start` warm the indicators up; the flow is
"switched on" at `start` with a fresh state (no colour known, flat).
"""

import time

import dagster as dg
import pandas as pd

from trading_assets.core.backtest import run_backtest
from trading_assets.core.strategies import trend_dmi
from trading_assets.core.strategies import trend_dmi_alerts as proxy
from trading_assets.defs.backtest_support import (
    BacktestRunConfig,
    backtest_asset,
    backtest_output,
    bad_params_fail,
    fetch_bars,
    preview_markdown,
)
from trading_assets.resources.base import MarketDataResource

FLOW = trend_dmi.FLOW


class TrendDmiBacktestConfig(BacktestRunConfig):
    """Date range, costs, watchlist and the proxy's parameters."""

    start: str = "2025-02-03"
    end: str = "2025-03-28"
    symbols: list[str] = ["SPY"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "30min"
    trend_period: int = 20
    dmi_period: int = 14
    warmup_sessions: int = 5
    size: float = 1.0


def _alert_counts(log: pd.DataFrame) -> dict[str, int]:
    """How many alerts of each kind came, and what the state machine did with them."""
    actions = log["actions"].str.split().explode().dropna().value_counts()
    return {
        "trend_flips": int((log["kind"] == "trend").sum()),
        "di_crosses": int((log["kind"] == "dmi").sum()),
        "ignored": int((log["outcome"] == "ignored").sum()),
        "re_entries": int(((log["kind"] == "dmi") & log["actions"].str.startswith("OPEN")).sum()),
        **{str(k): int(v) for k, v in actions.items()},
    }


@backtest_asset(
    FLOW,
    description="The trend + DMI flow over a watchlist. A backtest has no TradingView alerts, "
                "so they are rebuilt from bars (trend colour: close above or below an EMA; DI "
                "crosses: +DI against -DI) and run through the live flow's own state machine; "
                "fills at the alert bar's close.",
)
def trend_dmi_backtest_asset(
    context: dg.AssetExecutionContext,
    config: TrendDmiBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    with bad_params_fail(FLOW):
        params = proxy.ProxyParams(trend_period=config.trend_period,
                                   dmi_period=config.dmi_period, interval=config.interval)
    window = fetch_bars(context, market_data, config, config.symbols, config.interval,
                        config.warmup_sessions)
    bars, needed = window.bars, proxy.warmup_bars(params)
    warm = bars[bars.index < window.start].groupby("symbol").size()
    short = sorted(str(s) for s in set(bars["symbol"]) if warm.get(s, 0) < needed)
    if short:
        context.log.warning(f"fewer than {needed} warm-up bars for {short}: their first "
                            "alerts come later than start (raise warmup_sessions)")
    with bad_params_fail(FLOW):  # size
        signals = proxy.backtest_signals(bars, params, start=window.start, end=window.end,
                                         size=config.size)
    log = signals.extra["alert_log"]
    counts = _alert_counts(log)
    context.log.info(f"alerts: {counts}")
    return backtest_output(
        run_backtest(signals, config.costs()), config, flow=FLOW, t0=t0,
        params=dg.MetadataValue.json({"trend_period": params.trend_period,
                                      "dmi_period": params.dmi_period,
                                      "interval": params.interval,
                                      "warmup_sessions": config.warmup_sessions}),
        alert_counts=dg.MetadataValue.json(counts),
        alerts=dg.MetadataValue.md(preview_markdown(
            log.loc[:, ["symbol", "bar_time", "kind", "detail", "outcome", "actions", "position"]]
               .set_index("symbol"), "alerts", time_columns=["bar_time"])),
        proxy=dg.MetadataValue.md(
            "Alerts synthesised from bars (no TradingView in a backtest): trend colour BLUE "
            f"when close > EMA({params.trend_period}), RED otherwise; DI crosses on sign "
            f"changes of +DI - -DI (DMI {params.dmi_period}); both on {params.interval} bars "
            "(live: 10-minute trend, 15-minute DMI). See `core.strategies.trend_dmi_alerts`."
        ),
    )
