"""The IG Fibonacci tick: bars -> swings -> signals -> orders -> transactions -> equity, one
partition per hourly FX bar (defs/fib_retracement/partitions.py), every configured IG
market in one frame.

Orders carry their take-profit and stop-loss to the broker (IG `limitLevel`/`stopLevel`;
the paper broker simulates them on later bars by the backtester's rules), so protection
lives at the broker if this side goes down. A bracket that fires is found by the next
tick's sync and booked as a fill of the tick whose bar it fired in. Everything money goes
through the tick engine (`core.tick`): exactly-once orders, reconciliation, the equity rule.
"""

import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from trading_assets import settings
from trading_assets.core import fx_hours
from trading_assets.core.bars import bar_problems
from trading_assets.core.strategies import fib_retracement as strategy
from trading_assets.defs.conventions import BROKER_POOL, LEDGER_IO_MANAGER, OWNERS, flow_tags
from trading_assets.defs.fib_retracement.partitions import fx_bar_window, fx_bars_1h, fx_partition_of
from trading_assets.defs.fib_retracement.settings import FibRetracementSettings
from trading_assets.defs.reports import frame_table
from trading_assets.defs.tick_assets import RECONCILE_CHECK, elapsed_ms, place_orders, record_fills, settle
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.base import BrokerResource, LedgerResource, MarketDataResource
from trading_assets.resources.messaging import NotifierResource
from trading_assets.resources.trading import TradingSettings

FLOW = strategy.FLOW
PREFIX = [FLOW]
BARS_CHECK = "bars_complete_fresh_no_nan"
SPARE_BARS = 8  # fetched beyond the lookback, so a missing bar shows as a gap, not a short window

_common = {"group_name": FLOW, "key_prefix": PREFIX, "partitions_def": fx_bars_1h,
           "tags": flow_tags(FLOW, "tick"), "owners": OWNERS}


def _gaps(frame: pd.DataFrame, epics: list[str], expected: list) -> list[str]:
    """A market missing any of the FX hours the strategy looks at: its last `lookback`
    bars would span more than `lookback` hours, and swings would be read across the hole."""
    wanted = pd.DatetimeIndex(expected).tz_localize(fx_hours.TZ).tz_convert("UTC")
    out = []
    for epic in epics:
        have = frame.index[frame["symbol"].to_numpy() == epic] if len(frame) else pd.DatetimeIndex([], tz="UTC")
        missing = wanted.difference(have)
        if 0 < len(missing) < len(wanted):
            first = missing[0].tz_convert(fx_hours.TZ)
            out.append(f"{epic}: {len(missing)} of the last {len(wanted)} hourly bars missing "
                       f"(first {first:%Y-%m-%d %H:%M} New York)")
    return out


@dg.asset(
    **_common,
    kinds={"pandas"},
    check_specs=[dg.AssetCheckSpec(BARS_CHECK, asset=dg.AssetKey([*PREFIX, "bars"]), blocking=True,
                                   description="every market has its last `lookback` hourly bars, with no FX hour "
                                               "missing, ordered, finite and ending with this tick's bar; "
                                               "blocking: no signal and no order from bad bars")],
    description="Hourly bars of every configured IG market, the last `lookback` (40) and a few more, up to and "
                "including this tick's bar (IG's price history; offline, the replay FX week).",
)
def bars(context: dg.AssetExecutionContext, fib_retracement_prices: MarketDataResource,
         fib_retracement: FibRetracementSettings) -> Iterator[dg.Output | dg.AssetCheckResult]:
    t0 = time.perf_counter()
    start, end = fx_bar_window(context.partition_key)
    epics = [i.epic for i in fib_retracement.instruments]
    last = start.tz_convert(fx_hours.TZ).tz_localize(None).to_pydatetime()
    first = fx_hours.previous_bar_starts(last, fib_retracement.lookback + SPARE_BARS)[0]
    fetch_from = pd.Timestamp(first).tz_localize(fx_hours.TZ).tz_convert("UTC")
    context.log.info(f"fetching {len(epics)} markets x {fib_retracement.lookback + SPARE_BARS} hourly bars "
                     f"up to {end}")
    frame = fib_retracement_prices.get().get_bars(epics, fetch_from, end, "1h")
    problems = bar_problems(frame, epics, last_bar_start=start)
    counts = frame.groupby("symbol").size().to_dict() if len(frame) else {}
    problems += [f"{e}: {counts.get(e, 0)} bars, need the last {fib_retracement.lookback}"
                 for e in epics if counts.get(e, 0) < fib_retracement.lookback]
    problems += _gaps(frame, epics, fx_hours.previous_bar_starts(last, fib_retracement.lookback))
    last_close = frame.groupby("symbol")["close"].last().round(6).to_dict() if len(frame) else {}
    yield dg.Output(frame, metadata={
        "rows": len(frame), "markets": len(epics), "dagster/row_count": len(frame),
        "first_bar": str(frame.index.min()) if len(frame) else "",
        "last_bar": str(frame.index.max()) if len(frame) else "",
        "last_close": dg.MetadataValue.json(last_close),
        "work_ms": elapsed_ms(t0),
    })
    yield dg.AssetCheckResult(
        check_name=BARS_CHECK, asset_key=dg.AssetKey([*PREFIX, "bars"]), passed=not problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(problems) if problems else "bars complete, ordered, finite and fresh",
        metadata={"problems": dg.MetadataValue.json(problems), "bars_per_market": dg.MetadataValue.json(counts)})


@dg.asset(**_common, kinds={"pandas"},
          description="The peaks and troughs of each market's last `lookback` bars (a high or low beyond `window` "
                      "bars each side), alternating, with their time, price and how many bars ago.")
def swings(bars: pd.DataFrame, fib_retracement: FibRetracementSettings) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    frame = strategy.swings_frame(bars, fib_retracement.params())
    return dg.Output(frame, metadata={
        "swing_points": len(frame), "dagster/row_count": len(frame),
        "points": frame_table(frame.assign(at=frame["at"].astype(str))),
        "work_ms": elapsed_ms(t0),
    })


@dg.asset(**_common, kinds={"pandas"}, deps=[swings],
          description="Buy / sell / none per market: a pull-back to a Fibonacci level of the last swing, with the "
                      "entry, take-profit and stop-loss and the three swing points; the reason when none.")
def signals(context: dg.AssetExecutionContext, bars: pd.DataFrame,
            fib_retracement: FibRetracementSettings) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    frame = strategy.signals_frame(bars, fib_retracement.params())
    for epic, row in frame.iterrows():
        context.log.info(f"{epic}: {row['signal']} ({row['reason']})")
    shown = frame[["signal", "reason", "entry", "take_profit", "stop_loss", "level"]].reset_index()
    return dg.Output(frame, metadata={
        "signal_counts": dg.MetadataValue.json(frame["signal"].value_counts().to_dict()),
        "signals": frame_table(shown.astype({"reason": str})),
        "work_ms": elapsed_ms(t0),
    })


@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL,
          description="The tick's deals: a signal enters the market's size at the close with its take-profit and "
                      "stop-loss attached at the broker (an opposite position is closed first, a repeat ignored); "
                      "recorded in the ledger before the broker call, placed exactly once. Brackets that fired "
                      "since the last tick are settled first.")
def orders(
    context: dg.AssetExecutionContext,
    bars: pd.DataFrame,
    signals: pd.DataFrame,
    fib_retracement_broker: BrokerResource,
    ledger: LedgerResource,
    trading_settings: TradingSettings,
    fib_retracement: FibRetracementSettings,
    notifier: NotifierResource,
) -> dg.Output[pd.DataFrame]:
    _, end = fx_bar_window(context.partition_key)
    sizes = {i.epic: i.size for i in fib_retracement.instruments}
    closes = bars.groupby("symbol")["close"].last()
    frame, metadata = place_orders(
        context, flow=FLOW, broker=fib_retracement_broker.get(), ledger=ledger.get(), notifier=notifier,
        bar_end=end.to_pydatetime(), prices={str(s): float(p) for s, p in closes.items()},
        plan=lambda state: strategy.plan(signals, sizes, state.positions),
        kill_switch=settings.kill_switch_engaged(), max_tick_age_minutes=trading_settings.max_tick_age_minutes,
        bars=bars, exit_partition=fx_partition_of)
    return dg.Output(frame, metadata={
        "signal_counts": dg.MetadataValue.json(signals["signal"].value_counts().to_dict()), **metadata})


@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL, deps=[orders], io_manager_key=LEDGER_IO_MANAGER,
          description="Fills booked to this tick: its entries and exits, and any take-profit or stop-loss that "
                      "fired during its bar, confirmed at the broker and written to the ledger.")
def transactions(context: dg.AssetExecutionContext, fib_retracement_broker: BrokerResource,
                 ledger: LedgerResource) -> dg.Output[pd.DataFrame]:
    return record_fills(context, flow=FLOW, broker=fib_retracement_broker.get(), ledger=ledger.get())


@dg.asset(
    **_common,
    kinds={"python"},
    deps=[transactions],
    io_manager_key=LEDGER_IO_MANAGER,
    check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset=dg.AssetKey([*PREFIX, "equity"]),
                                   description="ledger positions (baseline + fills) equal the broker's")],
    description="Account value after the tick, recorded in the ledger (plotted over the partitions in the "
                "asset's Plots tab); the value is the curve up to this tick.",
)
def equity(context: dg.AssetExecutionContext, fib_retracement_broker: BrokerResource, ledger: LedgerResource,
           notifier: NotifierResource) -> Iterator[dg.Output | dg.AssetCheckResult]:
    _, end = fx_bar_window(context.partition_key)
    yield from settle(context, flow=FLOW, broker=fib_retracement_broker.get(), ledger=ledger.get(),
                      notifier=notifier, bar_end=end.to_pydatetime(), check_key=dg.AssetKey([*PREFIX, "equity"]),
                      exit_partition=fx_partition_of)


FLOW_ASSETS = [bars, swings, signals, orders, transactions, equity]

fib_retracement_job = dg.define_asset_job(
    name="fib_retracement_job",
    selection=dg.AssetSelection.assets(*FLOW_ASSETS),
    executor_def=bounded_in_process_executor,
    description="One hourly FX bar of the Fibonacci flow, bars to equity (run per hourly partition).",
)
