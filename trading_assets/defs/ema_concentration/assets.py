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
from trading_assets.core.execution import sync_open_intents
from trading_assets.core.messaging import NotificationKind
from trading_assets.core.ports import KillSwitchEngaged, OrderIntent
from trading_assets.core.strategies import ema_concentration as strategy
from trading_assets.core.tick import PositionDrift, TickReport, run_tick, settle_equity
from trading_assets.defs.conventions import LEDGER_IO_MANAGER, OWNERS, flow_tags
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.defs.notifications import tell
from trading_assets.defs.partitions import bar_window, market_bars_30m
from trading_assets.defs.reports import frame_markdown, frame_table
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.base import BrokerResource, LedgerResource, MarketDataResource
from trading_assets.resources.messaging import NotifierResource
from trading_assets.resources.trading import TradingSettings

FLOW = strategy.FLOW
GROUP = FLOW
PREFIX = [FLOW]
BARS_CHECK = "bars_complete_fresh_no_nan"
RECONCILE_CHECK = "ledger_reconciles_with_broker"

_common = {"group_name": GROUP, "key_prefix": PREFIX, "partitions_def": market_bars_30m,
           "tags": flow_tags(FLOW, "tick"), "owners": OWNERS}

# Bars are due a few minutes after each regular-hours bar closes (10:00 ... 15:30 New York
# here; a cron policy cannot say "except holidays", so a holiday shows the bars overdue).
BARS_FRESHNESS = dg.FreshnessPolicy.cron(deadline_cron="5,35 10-15 * * 1-5",
                                         lower_bound_delta=timedelta(minutes=30), timezone=calendar.TZ)


def _params(settings: EmaConcentrationSettings) -> strategy.Params:
    return strategy.Params(settings.target, settings.fast, settings.slow, settings.buying_power_fraction)


def _elapsed_ms(t0: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(round((time.perf_counter() - t0) * 1000, 3))


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
            "work_ms": _elapsed_ms(t0),
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
        "work_ms": _elapsed_ms(t0),
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
        "work_ms": _elapsed_ms(t0),
    })


def _why_no_orders(report: TickReport) -> str:
    """A short phrase for a tick that ordered nothing ("" if it ordered): what `make run`
    shows in its orders column. Strategy notes read "<signal>: <why>"; the signal has its
    own column, so only the why is kept."""
    if report.intents:
        return ""
    if report.gated == "older":
        return f"older than newest tick {report.newest_key}"
    if report.gated == "stale":
        return "closed too long ago to trade"
    return report.notes[0].split(": ", 1)[-1] if report.notes else "no orders planned"


def _intents_frame(intents: list[OrderIntent]) -> pd.DataFrame:
    columns = ["client_order_id", "symbol", "side", "qty", "leg", "reference_price", "status",
               "filled_qty", "filled_avg_price", "broker_order_id", "reason"]
    rows = [{c: (str(getattr(i, c)) if c in ("side", "status") else getattr(i, c)) for c in columns} for i in intents]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"qty": "float64", "filled_qty": "float64", "reference_price": "float64",
                         "filled_avg_price": "float64"})


@dg.asset(**_common, kinds={"python"}, pool="broker_api",
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
    t0 = time.perf_counter()
    key = context.partition_key
    _, end = bar_window(key)
    params = _params(ema_concentration)
    signal = strategy.Signal(signals.loc[params.target, "signal"])
    try:
        report = run_tick(
            ema_concentration_broker.get(), ledger.get(), flow=FLOW, partition_key=key, bar_end=end.to_pydatetime(),
            prices={str(s): float(p) for s, p in signals["price"].items()},
            plan=lambda state: strategy.plan(signal, params, state.positions, state.prices,
                                             state.account.buying_power),
            kill_switch=settings.kill_switch_engaged(),
            max_tick_age_minutes=trading_settings.max_tick_age_minutes,
        )
    except PositionDrift as exc:
        drift = [d.__dict__ for d in exc.drift]
        tell(context, notifier, NotificationKind.DRIFT, f"{FLOW} {key}: ledger and broker disagree", str(exc),
             flow=FLOW, details={"partition": key, "drift": drift})
        raise dg.Failure(description=str(exc), metadata={"drift": dg.MetadataValue.json(drift)}) from exc
    except KillSwitchEngaged as exc:
        tell(context, notifier, NotificationKind.KILL_SWITCH, f"{FLOW} {key}: kill switch engaged, no orders",
             str(exc), flow=FLOW, details={"partition": key})
        raise
    # one log event for the tick (each event is a storage write): what was resolved, the
    # notes, then one line per order
    lines = [f"resolved {report.recovered} open order(s) from earlier ticks"] if report.recovered else []
    lines += list(report.notes)
    lines += [f"{i.side.value} {i.qty:g} {i.symbol} [{i.leg}] -> {i.status} ({i.client_order_id})"
              for i in report.intents]
    context.log.info("\n".join(lines) or "no orders")
    execution = report.execution
    for i in report.intents:
        if i.client_order_id in execution.rejected:
            tell(context, notifier, NotificationKind.ORDER_REJECTED,
                 f"{FLOW} {key}: {i.side.value} {i.qty:g} {i.symbol} rejected",
                 f"the broker rejected {i.client_order_id}: {i.reason or 'no reason given'}", flow=FLOW,
                 details={"partition": key, "client_order_id": i.client_order_id, "symbol": i.symbol,
                          "side": i.side.value, "qty": i.qty, "reason": i.reason})
    frame = _intents_frame(report.intents)
    return dg.Output(frame, metadata={
        "signal": signal.value,
        "orders": len(frame),
        "dagster/row_count": len(frame),
        "orders_table": frame_table(frame.drop(columns=["broker_order_id"]),
                                    money=("reference_price", "filled_avg_price")),
        "placed_this_run": len(execution.submitted),
        "already_at_broker": len(execution.adopted) + len(execution.skipped),
        "placed_by_another_run": len(execution.claimed_elsewhere),
        "rejected": len(execution.rejected),
        "plan": "new" if execution.new_plan else "existing (rerun resolves, never re-plans)",
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in report.notes) or "-"),
        "no_orders_because": _why_no_orders(report),
        "buying_power_before": round(report.account.buying_power, 2),
        "currency": report.account.currency,
        "work_ms": _elapsed_ms(t0),
    })


# transactions and equity read the ledger and the broker, not the upstream frames: `deps`
# keeps the lineage without loading a file (and two events) per edge each tick.
@dg.asset(**_common, kinds={"python"}, pool="broker_api", deps=[orders], io_manager_key=LEDGER_IO_MANAGER,
          description="Fills of this tick's orders, confirmed at the broker and written to the ledger.")
def transactions(
    context: dg.AssetExecutionContext, ema_concentration_broker: BrokerResource, ledger: LedgerResource
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    brk, led = ema_concentration_broker.get(), ledger.get()
    sync_open_intents(brk, led, FLOW, context.partition_key)
    fills = led.transactions(flow=FLOW, partition_key=context.partition_key)
    fills = fills[fills["kind"] == "fill"].reset_index(drop=True)
    notional = float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0
    return dg.Output(fills, metadata={
        "fills": len(fills),
        "dagster/row_count": len(fills),
        "fills_table": frame_table(fills.loc[:, ["client_order_id", "symbol", "side", "qty", "price", "commission",
                                                 "executed_at"]], money=("price", "commission")),
        "notional": round(notional, 2),
        "commission": round(float(fills["commission"].sum()), 2) if len(fills) else 0.0,
        "work_ms": _elapsed_ms(t0),
    })


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
    t0 = time.perf_counter()
    _, end = bar_window(context.partition_key)
    outcome = settle_equity(ema_concentration_broker.get(), ledger.get(), flow=FLOW,
                            partition_key=context.partition_key, bar_end=end.to_pydatetime())
    context.log.info(f"{outcome.note}; equity {outcome.equity:,.2f} (cash {outcome.cash:,.2f}, "
                     f"positions {outcome.positions})" if outcome.known else outcome.note)
    yield dg.Output(outcome.curve, metadata={
        # floats per partition: Dagster plots them over the partitions (the equity curve)
        "equity": round(outcome.equity, 2),
        "cash": round(outcome.cash, 2),
        "equity_recorded": outcome.note,
        "positions": dg.MetadataValue.json(outcome.positions),
        "ticks_recorded": len(outcome.curve),
        "dagster/row_count": len(outcome.curve),
        "work_ms": _elapsed_ms(t0),
    })
    if outcome.drift:
        tell(context, notifier, NotificationKind.DRIFT,
             f"{FLOW} {context.partition_key}: ledger and broker disagree after the tick",
             "; ".join(map(str, outcome.drift)), flow=FLOW,
             details={"partition": context.partition_key, "drift": [d.__dict__ for d in outcome.drift]})
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=dg.AssetKey([*PREFIX, "equity"]),
        passed=not outcome.drift,
        description="; ".join(map(str, outcome.drift)) if outcome.drift else "ledger matches broker",
        metadata={"drift": dg.MetadataValue.json([d.__dict__ for d in outcome.drift])},
    )


FLOW_ASSETS = [bars, indicators, signals, orders, transactions, equity]

ema_concentration_job = dg.define_asset_job(
    name="ema_concentration_job",
    selection=dg.AssetSelection.assets(*FLOW_ASSETS),
    executor_def=bounded_in_process_executor,
    description="One tick of the EMA concentration flow (run per 30-minute bar partition).",
)
