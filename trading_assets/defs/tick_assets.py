"""What every trading flow's orders, transactions and equity assets do with the tick
engine's results, in one place: the flow's own asset only says how it plans.

- `place_orders`: run the tick (exactly-once execution), tell people about drift, the
  kill switch and rejected orders, log one event, and build the orders frame + metadata.
- `record_fills`: the tick's fills, confirmed at the broker, as the transactions asset.
- `settle`: the equity-history rule, the equity metadata Dagster plots, the
  reconciliation check and a drift notification.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pandas as pd

from trading_assets.core.execution import ExitPartition, sync_open_intents
from trading_assets.core.messaging import NotificationKind
from trading_assets.core.ports import Broker, KillSwitchEngaged, Ledger, OrderIntent
from trading_assets.core.tick import PositionDrift, TickReport, run_tick, settle_equity
from trading_assets.defs.notifications import tell
from trading_assets.defs.reports import frame_table
from trading_assets.resources.messaging import NotifierResource

RECONCILE_CHECK = "ledger_reconciles_with_broker"


def elapsed_ms(t0: float) -> dg.MetadataValue:
    return dg.MetadataValue.float(round((time.perf_counter() - t0) * 1000, 3))


def intents_frame(intents: list[OrderIntent]) -> pd.DataFrame:
    columns = ["client_order_id", "symbol", "side", "qty", "leg", "reference_price", "status",
               "filled_qty", "filled_avg_price", "broker_order_id", "reason"]
    rows = [{c: (str(getattr(i, c)) if c in ("side", "status") else getattr(i, c)) for c in columns} for i in intents]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"qty": "float64", "filled_qty": "float64", "reference_price": "float64",
                         "filled_avg_price": "float64"})


def why_no_orders(report: TickReport) -> str:
    """A short phrase for a tick that ordered nothing ("" if it ordered). Strategy notes
    read "<signal>: <why>"; only the why is kept."""
    if report.intents:
        return ""
    if report.gated == "older":
        return f"older than newest tick {report.newest_key}"
    if report.gated == "stale":
        return "closed too long ago to trade"
    return report.notes[0].split(": ", 1)[-1] if report.notes else "no orders planned"


def place_orders(context: dg.AssetExecutionContext, *, flow: str, broker: Broker, ledger: Ledger,
                 notifier: NotifierResource, **tick: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run one tick (`tick`: run_tick's keyword arguments) and return the orders frame and
    its metadata; drift and the kill switch fail the step after telling."""
    t0 = time.perf_counter()
    key = context.partition_key
    try:
        report = run_tick(broker, ledger, flow=flow, partition_key=key, **tick)
    except PositionDrift as exc:
        drift = [d.__dict__ for d in exc.drift]
        tell(context, notifier, NotificationKind.DRIFT, f"{flow} {key}: ledger and broker disagree", str(exc),
             flow=flow, details={"partition": key, "drift": drift})
        raise dg.Failure(description=str(exc), metadata={"drift": dg.MetadataValue.json(drift)}) from exc
    except KillSwitchEngaged as exc:
        tell(context, notifier, NotificationKind.KILL_SWITCH, f"{flow} {key}: kill switch engaged, no orders",
             str(exc), flow=flow, details={"partition": key})
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
                 f"{flow} {key}: {i.side.value} {i.qty:g} {i.symbol} rejected",
                 f"the broker rejected {i.client_order_id}: {i.reason or 'no reason given'}", flow=flow,
                 details={"partition": key, "client_order_id": i.client_order_id, "symbol": i.symbol,
                          "side": i.side.value, "qty": i.qty, "reason": i.reason})
    frame = intents_frame(report.intents)
    metadata = {
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
        "no_orders_because": why_no_orders(report),
        "buying_power_before": round(report.account.buying_power, 2),
        "currency": report.account.currency,
        "work_ms": elapsed_ms(t0),
    }
    return frame, metadata


def record_fills(context: dg.AssetExecutionContext, *, flow: str, broker: Broker, ledger: Ledger
                 ) -> dg.Output[pd.DataFrame]:
    """The transactions asset: this tick's fills, confirmed at the broker."""
    t0 = time.perf_counter()
    sync_open_intents(broker, ledger, flow, context.partition_key)
    fills = ledger.transactions(flow=flow, partition_key=context.partition_key)
    fills = fills[fills["kind"] == "fill"].reset_index(drop=True)
    notional = float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0
    return dg.Output(fills, metadata={
        "fills": len(fills),
        "dagster/row_count": len(fills),
        "fills_table": frame_table(fills.loc[:, ["client_order_id", "symbol", "side", "qty", "price", "commission",
                                                 "executed_at"]], money=("price", "commission")),
        "notional": round(notional, 2),
        "commission": round(float(fills["commission"].sum()), 2) if len(fills) else 0.0,
        "work_ms": elapsed_ms(t0),
    })


def settle(context: dg.AssetExecutionContext, *, flow: str, broker: Broker, ledger: Ledger,
           notifier: NotifierResource, bar_end: Any, check_key: dg.AssetKey, forward_only: bool = True,
           exit_partition: ExitPartition | None = None) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """The equity asset: the equity-history rule, the curve, and the reconciliation check."""
    t0 = time.perf_counter()
    outcome = settle_equity(broker, ledger, flow=flow, partition_key=context.partition_key, bar_end=bar_end,
                            forward_only=forward_only, exit_partition=exit_partition)
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
        "work_ms": elapsed_ms(t0),
    })
    if outcome.drift:
        tell(context, notifier, NotificationKind.DRIFT,
             f"{flow} {context.partition_key}: ledger and broker disagree after the tick",
             "; ".join(map(str, outcome.drift)), flow=flow,
             details={"partition": context.partition_key, "drift": [d.__dict__ for d in outcome.drift]})
    yield dg.AssetCheckResult(
        check_name=RECONCILE_CHECK,
        asset_key=check_key,
        passed=not outcome.drift,
        description="; ".join(map(str, outcome.drift)) if outcome.drift else "ledger matches broker",
        metadata={"drift": dg.MetadataValue.json([d.__dict__ for d in outcome.drift])},
    )
