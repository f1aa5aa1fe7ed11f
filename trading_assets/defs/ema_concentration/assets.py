"""The EMA concentration tick: bars -> indicators -> signals -> orders -> transactions ->
equity, one partition per 30-minute NYSE bar.

Every symbol of the tick (the target, whatever is held, and the watchlist) travels as
one vectorised frame. Orders and equity go through the tick engine (`core.tick`), which
makes orders exactly-once and keeps the equity history true.
"""


import time
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd

from trading_assets import settings
from trading_assets.core import calendar
from trading_assets.core.bars import bar_problems
from trading_assets.core.strategies import ema_concentration as strategy
from trading_assets.defs.conventions import BROKER_POOL, LEDGER_IO_MANAGER, OWNERS, flow_tags
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.defs.partitions import bar_window, market_bars_30m
from trading_assets.defs.reports import frame_markdown
from trading_assets.defs.tick_assets import RECONCILE_CHECK, elapsed_ms, place_orders, record_fills, settle
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.base import BrokerResource, LedgerResource, MarketDataResource
from trading_assets.resources.messaging import NotifierResource
from trading_assets.resources.trading import TradingSettings

FLOW = strategy.FLOW
GROUP = FLOW
PREFIX = [FLOW]
BARS_CHECK = "bars_complete_fresh_no_nan"

_common = {"group_name": GROUP, "key_prefix": PREFIX, "partitions_def": market_bars_30m,
           "tags": flow_tags(FLOW, "tick"), "owners": OWNERS}

# Bars are due a few minutes after each regular-hours bar closes (10:00 ... 15:30 New York
# here; a cron policy cannot say "except holidays", so a holiday shows the bars overdue).
BARS_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="5,35 10-15 * * 1-5",
                                         lower_bound_delta=timedelta(minutes=30), timezone=calendar.TZ)


def _params(settings: EmaConcentrationSettings) -> strategy.Params:
    return strategy.Params(settings.target, settings.fast, settings.slow, settings.buying_power_fraction)


@dg.asset(
    **_common,
    kinds={"pandas"},
    freshness_policy=BARS_FRESHNESS,
    check_specs=[dg.AssetCheckSpec(BARS_CHECK, asset=dg.AssetKey([*PREFIX, "bars"]), blocking=True,
                                   description="every symbol has ordered, finite bars ending with this tick's bar; "
                                               "blocking: no orders from bad bars")],
    description="30-minute bars of the target, every held symbol and the watchlist, "
                "over the lookback sessions up to and including this tick's bar.",
)
def bars(
    context: dg.AssetExecutionContext,
    market_data: MarketDataResource,
    ema_concentration_broker: BrokerResource,
    ema_concentration: EmaConcentrationSettings,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    t0 = time.perf_counter()
    start, end = bar_window(context.partition_key)
    held = [p.symbol for p in ema_concentration_broker.get().positions()]
    symbols = list(dict.fromkeys([ema_concentration.target, *held, *ema_concentration.watchlist]))
    sessions = calendar.previous_sessions(start.tz_convert(calendar.TZ).date(), ema_concentration.lookback_sessions)
    fetch_from, _ = calendar.session_open_close(sessions[0])
    context.log.info(f"fetching {len(symbols)} symbols x {len(sessions)} sessions of 30min bars up to {end}")
    frame = market_data.get().get_bars(symbols, fetch_from.tz_convert("UTC"), end, "30min")
    problems = bar_problems(frame, symbols, last_bar_start=start)
    target_rows = frame[frame["symbol"] == ema_concentration.target]
    yield dg.Output(
        frame,
        metadata={
            "rows": len(frame),
            "symbols": len(symbols),
            "first_bar": str(frame.index.min()) if len(frame) else "",
            "last_bar": str(frame.index.max()) if len(frame) else "",
            "last_price": float(target_rows["close"].iloc[-1]) if len(target_rows) else float("nan"),
            "work_ms": elapsed_ms(t0),
        },
    )
    yield dg.AssetCheckResult(
        check_name=BARS_CHECK,
        asset_key=dg.AssetKey([*PREFIX, "bars"]),
        passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) if problems else "bars complete, ordered, finite and fresh",
        metadata={"problems": dg.MetadataValue.json(problems), "symbols_expected": len(symbols)},
    )


@dg.asset(**_common, kinds={"pandas"}, description="Per symbol: last price and EMA fast/slow on hourly closes.")
def indicators(
    context: dg.AssetExecutionContext, bars: pd.DataFrame, ema_concentration: EmaConcentrationSettings
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    frame = strategy.indicator_frame(bars, _params(ema_concentration))
    row = frame.loc[ema_concentration.target]
    return dg.Output(frame, metadata={
        "symbols": len(frame),
        "target_price": float(row["price"]),
        "target_ema_fast": float(row["ema_fast"]),
        "target_ema_slow": float(row["ema_slow"]),
        "hourly_bars": int(row["hourly_bars"]),
        "preview": dg.MetadataValue.md(frame_markdown(frame.drop(columns=["as_of"]))),
        "work_ms": elapsed_ms(t0),
    })


@dg.asset(**_common, kinds={"pandas"},
          description="Bullish / bearish / neutral per symbol (price vs its fast and slow EMA of hourly closes).")
def signals(
    context: dg.AssetExecutionContext, indicators: pd.DataFrame, ema_concentration: EmaConcentrationSettings
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    frame = strategy.signals_frame(indicators)
    target_signal = str(frame.loc[ema_concentration.target, "signal"])
    context.log.info(f"{ema_concentration.target}: {target_signal}")
    return dg.Output(frame, metadata={
        "target_signal": target_signal,
        "signal_counts": dg.MetadataValue.json(frame["signal"].value_counts().to_dict()),
        "work_ms": elapsed_ms(t0),
    })


@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL,
          description="The tick's orders: planned from the target's signal, recorded in the ledger "
                      "before the broker call, placed exactly once.")
def orders(
    context: dg.AssetExecutionContext,
    signals: pd.DataFrame,
    ema_concentration_broker: BrokerResource,
    ledger: LedgerResource,
    trading_settings: TradingSettings,
    ema_concentration: EmaConcentrationSettings,
    notifier: NotifierResource,
) -> dg.Output[pd.DataFrame]:
    _, end = bar_window(context.partition_key)
    params = _params(ema_concentration)
    signal = strategy.Signal(signals.loc[params.target, "signal"])
    frame, metadata = place_orders(
        context, flow=FLOW, broker=ema_concentration_broker.get(), ledger=ledger.get(), notifier=notifier,
        bar_end=end.to_pydatetime(), prices={str(s): float(p) for s, p in signals["price"].items()},
        plan=lambda state: strategy.plan(signal, params, state.positions, state.prices, state.account.buying_power),
        kill_switch=settings.kill_switch_engaged(), max_tick_age_minutes=trading_settings.max_tick_age_minutes)
    return dg.Output(frame, metadata={"signal": signal.value, **metadata})


# transactions and equity read the ledger and the broker, not the upstream frames: `deps`
# keeps the lineage without loading a file (and two events) per edge each tick.
@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL, deps=[orders], io_manager_key=LEDGER_IO_MANAGER,
          description="Fills of this tick's orders, confirmed at the broker and written to the ledger.")
def transactions(
    context: dg.AssetExecutionContext, ema_concentration_broker: BrokerResource, ledger: LedgerResource
) -> dg.Output[pd.DataFrame]:
    return record_fills(context, flow=FLOW, broker=ema_concentration_broker.get(), ledger=ledger.get())


@dg.asset(
    **_common,
    kinds={"python"},
    deps=[transactions],
    io_manager_key=LEDGER_IO_MANAGER,
    check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset=dg.AssetKey([*PREFIX, "equity"]),
                                   description="ledger positions (baseline + fills) equal the broker's")],
    description="Account value after the tick, recorded in the ledger (equity and cash are plotted "
                "over the partitions in the asset's Plots tab); the value is the curve up to this tick.",
)
def equity(
    context: dg.AssetExecutionContext,
    ema_concentration_broker: BrokerResource,
    ledger: LedgerResource,
    notifier: NotifierResource,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    _, end = bar_window(context.partition_key)
    yield from settle(context, flow=FLOW, broker=ema_concentration_broker.get(), ledger=ledger.get(),
                      notifier=notifier, bar_end=end.to_pydatetime(), check_key=dg.AssetKey([*PREFIX, "equity"]))


FLOW_ASSETS = [bars, indicators, signals, orders, transactions, equity]

ema_concentration_job = dg.define_asset_job(
    name="ema_concentration_job",
    selection=dg.AssetSelection.assets(*FLOW_ASSETS),
    executor_def=bounded_in_process_executor,
    description="One tick of the EMA concentration flow (run per 30-minute bar partition).",
)
