"""The IG Fibonacci tick, signals side: bars -> swings -> signals, one partition per hourly
FX bar (defs/fib_retracement/partitions.py), every configured IG market in one frame.

Orders with their take-profit and stop-loss at the broker, fills and equity follow
(issue 11); until then the job computes and records the signals each hour would act on.
"""

import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.bars import bar_problems
from trading_assets.core.strategies import fib_retracement as strategy
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.fib_retracement.partitions import fx_bar_window, fx_bars_1h
from trading_assets.defs.fib_retracement.settings import FibRetracementSettings
from trading_assets.defs.reports import frame_table
from trading_assets.defs.tick_assets import elapsed_ms
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.base import MarketDataResource

FLOW = strategy.FLOW
PREFIX = [FLOW]
BARS_CHECK = "bars_complete_fresh_no_nan"
SPARE_BARS = 8  # fetched beyond the lookback, so a missing bar shows as a gap, not a short window

_common = {"group_name": FLOW, "key_prefix": PREFIX, "partitions_def": fx_bars_1h,
           "tags": flow_tags(FLOW, "tick"), "owners": OWNERS}


@dg.asset(
    **_common,
    kinds={"pandas"},
    check_specs=[dg.AssetCheckSpec(BARS_CHECK, asset=dg.AssetKey([*PREFIX, "bars"]), blocking=True,
                                   description="every market has at least `lookback` ordered, finite hourly bars "
                                               "ending with this tick's bar; blocking: no signal from bad bars")],
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


FLOW_ASSETS = [bars, swings, signals]

fib_retracement_signals_job = dg.define_asset_job(
    name="fib_retracement_signals_job",
    selection=dg.AssetSelection.assets(*FLOW_ASSETS),
    executor_def=bounded_in_process_executor,
    description="One hourly FX bar through the Fibonacci flow's signals (orders follow with issue 11).",
)
