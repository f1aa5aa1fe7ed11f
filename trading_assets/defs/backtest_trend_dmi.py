"""The `trend_dmi` backtest asset (seed 001): synthesised alerts through the live state machine.

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

from trading_assets.core import calendar
from trading_assets.core.backtest import BacktestConfig, PricePanels, backtest
from trading_assets.core.strategies import trend_dmi_alerts as proxy
from trading_assets.defs.backtests import _output, _session_range
from trading_assets.defs.reports import frame_markdown
from trading_assets.defs.resources import MarketDataResource


class TrendDmiBacktestConfig(dg.Config):
    """Date range (New York session dates, inclusive), watchlist, proxy parameters, costs."""

    start: str = "2025-02-03"
    end: str = "2025-03-28"
    symbols: list[str] = ["SPY"]  # noqa: RUF012 (pydantic copies defaults)
    interval: str = "30min"
    trend_period: int = 20
    dmi_period: int = 14
    warmup_sessions: int = 5
    size: float = 1.0
    commission_bps: float = 0.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0
    init_cash: float = 100_000.0


def _fetch_from(start: pd.Timestamp, warmup_sessions: int) -> pd.Timestamp:
    """Open (UTC) of the session `warmup_sessions` before the one starting at `start`."""
    if warmup_sessions < 0:
        raise dg.Failure(f"warmup_sessions must be >= 0, got {warmup_sessions}")
    if warmup_sessions == 0:
        return start
    first_day = start.tz_convert(calendar.TZ).date()
    first = calendar.previous_sessions(first_day, warmup_sessions + 1)[0]
    return calendar.session_open_close(first)[0].tz_convert("UTC")


def _alerts_preview(log: pd.DataFrame, rows: int = 20) -> str:
    """The last synthesised alerts and what the state machine did with them."""
    if log.empty:
        return "no alerts in the range"
    cols = ["symbol", "bar_time", "kind", "detail", "outcome", "actions", "position"]
    preview = log.loc[:, cols].tail(rows).reset_index(drop=True)
    preview["bar_time"] = preview["bar_time"].astype(str)
    return frame_markdown(preview, max_rows=rows)


@dg.asset(
    key=["trend_dmi", "backtest"],
    group_name="trend_dmi",
    kinds={"pandas"},
    description="Seed 001 over a watchlist with synthesised alerts (a proxy: close vs "
                "EMA(trend_period) for the Trend Validator colour, +DI/-DI sign changes for "
                "the DI crosses, on the configured bars) folded through the live per-symbol "
                "state machine; fills at the alert bar's close.",
)
def trend_dmi_backtest_asset(
    context: dg.AssetExecutionContext,
    config: TrendDmiBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    try:
        params = proxy.ProxyParams(trend_period=config.trend_period,
                                   dmi_period=config.dmi_period, interval=config.interval)
    except ValueError as exc:
        raise dg.Failure(f"bad trend_dmi backtest parameters: {exc}") from exc
    start, end = _session_range(config.start, config.end)
    fetch_from = _fetch_from(start, config.warmup_sessions)
    bars = market_data.get().get_bars(config.symbols, fetch_from, end, config.interval)
    if bars.empty or not (bars.index >= start).any():
        raise dg.Failure(f"no bars for {config.symbols} between {config.start} and {config.end}")
    warm = bars[bars.index < start].groupby("symbol").size()
    needed = max(params.trend_period, params.dmi_period + 1)
    short = sorted(str(s) for s in set(bars["symbol"]) if warm.get(s, 0) < needed)
    if short:
        context.log.warning(f"fewer than {needed} warm-up bars for {short}: their first "
                            "alerts come later than start (raise warmup_sessions)")
    context.log.info(f"{len(bars)} {config.interval} bars of {len(config.symbols)} symbols "
                     f"from {fetch_from} (warm-up) to {end}")

    log = proxy.alert_log(bars, params, start=start)
    in_range = bars[bars.index >= start]
    prices = PricePanels.from_bars(in_range)
    signal = proxy.positions_from_log(log, pd.DatetimeIndex(prices.close.index),
                                      [str(c) for c in prices.close.columns])
    cfg = BacktestConfig(
        fill="close", init_cash=config.init_cash, size_mode="fraction", size=config.size,
        allow_short=True, slippage_bps=config.slippage_bps,
        commission_per_share=config.commission_per_share, commission_bps=config.commission_bps,
    )
    result = backtest(prices, signal, cfg)
    actions = log["actions"].str.split().explode().dropna().value_counts()
    counts = {
        "trend_flips": int((log["kind"] == "trend").sum()),
        "di_crosses": int((log["kind"] == "dmi").sum()),
        "ignored": int((log["outcome"] == "ignored").sum()),
        "re_entries": int(((log["kind"] == "dmi") & log["actions"].str.startswith("OPEN")).sum()),
        **{str(k): int(v) for k, v in actions.items()},
    }
    context.log.info(f"alerts: {counts}")
    return _output(
        result, f"trend_dmi backtest {config.start}..{config.end}", t0,
        params=dg.MetadataValue.json({"trend_period": params.trend_period,
                                      "dmi_period": params.dmi_period,
                                      "interval": params.interval,
                                      "warmup_sessions": config.warmup_sessions}),
        alert_counts=dg.MetadataValue.json(counts),
        alerts=dg.MetadataValue.md(_alerts_preview(log)),
        proxy=dg.MetadataValue.md(
            "Alerts synthesised from bars (no TradingView in a backtest): trend colour BLUE "
            f"when close > EMA({params.trend_period}), RED otherwise; DI crosses on sign "
            f"changes of +DI - -DI (DMI {params.dmi_period}); both on {params.interval} bars "
            "(live: 10-minute trend, 15-minute DMI). See `core.strategies.trend_dmi_alerts`."
        ),
    )
