"""The TradingView alert flow, one run per alert: alert -> transition -> orders ->
transactions -> equity, each partition one stored alert (`alerts.alert_partitions`).

From an order a user clicks back to the transition (the symbol's state before and after,
and why) and to the alert with its payload. The per-symbol state lives in the symbol
state store (SQLite locally, DynamoDB in aws mode) with a version checked on write; the
transition each alert caused is recorded once with it, so a rerun after a crash places
the recorded actions' orders instead of re-applying the alert.
"""


import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from trading_assets import settings
from trading_assets.adapters.tradingview.alerts import alert_content_id, parse_tradingview_alert
from trading_assets.core.instruments import resolve_instrument
from trading_assets.core.ports import Side
from trading_assets.core.strategies import trend_dmi as machine
from trading_assets.core.symbol_state import RecordedTransition, SymbolStateStore
from trading_assets.core.tick import PlannedOrder, TickPlan, TickState
from trading_assets.defs.conventions import BROKER_POOL, LEDGER_IO_MANAGER, OWNERS, flow_tags
from trading_assets.defs.tick_assets import RECONCILE_CHECK, place_orders, record_fills, settle
from trading_assets.defs.trend_dmi.alerts import FLOW, AlertConfig, alert_partitions, alert_payload
from trading_assets.defs.trend_dmi.settings import TrendDmiSettings
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.base import BrokerResource, LedgerResource
from trading_assets.resources.messaging import NotifierResource
from trading_assets.resources.symbol_state import SymbolStateResource

PREFIX = [FLOW]
_common = {"group_name": FLOW, "key_prefix": PREFIX, "partitions_def": alert_partitions,
           "tags": flow_tags(FLOW, "alert"), "owners": OWNERS}
COMMIT_ATTEMPTS = 8  # a lost optimistic write reloads and re-applies; more means a storm


@dg.asset(**_common, kinds={"python"},
          description="The stored TradingView alert (payload without the passphrase), validated into the "
                      "flow's event.")
def alert(context: dg.AssetExecutionContext, config: AlertConfig) -> dg.Output[pd.DataFrame]:
    payload = alert_payload(config.body)
    alert_id = alert_content_id(payload)
    if not context.partition_key.endswith(alert_id):
        raise dg.Failure(f"partition {context.partition_key} is not the alert in its config ({alert_id}): "
                         "runs of an alert carry that alert's stored body")
    event = parse_tradingview_alert(payload, event_id=alert_id)
    row = {
        "alert_id": alert_id,
        "ticker": event.symbol,
        "event": type(event).__name__,
        "signal": getattr(event, "color", None) or getattr(event, "direction", None),
        "fired_at": pd.Timestamp(event.at),
        "bar_time": pd.Timestamp(event.bar_time) if event.bar_time else pd.NaT,
        "price": event.price,
        "timeframe": event.timeframe,
        "received_at": config.received_at,
        "payload": json.dumps(payload, sort_keys=True),
    }
    frame = pd.DataFrame([row])
    return dg.Output(frame, metadata={
        "alert_id": alert_id, "ticker": event.symbol, "event": row["event"], "signal": str(row["signal"]),
        "fired_at": event.at.isoformat(), "price": float(event.price or 0.0),
        "payload": dg.MetadataValue.json(payload),
    })


def _event_from(alert_frame: pd.DataFrame) -> machine.Event:
    row = alert_frame.iloc[0]
    return parse_tradingview_alert(json.loads(row["payload"]), event_id=row["alert_id"])


def decide(store: SymbolStateStore, event: machine.Event, instrument: str | None, *, now: datetime,
           max_age: timedelta) -> RecordedTransition:
    """The alert's transition: the one already recorded, or apply it to the symbol's
    current state and commit both with a version check (a lost race re-applies)."""
    for _ in range(COMMIT_ATTEMPTS):
        recorded = store.transition_for(FLOW, event.event_id)
        if recorded is not None:
            return recorded
        stored = store.load(FLOW, event.symbol)
        state = (machine.TrendState.from_dict(stored.state) if stored.state is not None
                 else machine.TrendState(event.symbol))
        if instrument is None:
            step = machine.Transition(state, machine.Outcome.IGNORED,
                                      f"ticker {event.symbol} is not mapped to an instrument: add it to the "
                                      "trend_dmi resource's instruments")
        else:
            step = machine.apply(state, event, now=now, max_age=max_age)
        transition = RecordedTransition(
            flow=FLOW, alert_id=event.event_id, symbol=event.symbol, outcome=step.outcome.value,
            reason=step.reason, actions=tuple(a.value for a in step.actions),
            state_before=None if stored.state is None else dict(stored.state), state_after=step.state.to_dict(),
            version_after=stored.version + 1, recorded_at=now,
            details={"instrument": instrument, "event_at": event.at.isoformat(), "price": event.price})
        if store.commit(stored.version, transition):
            return transition
    raise RuntimeError(f"{event.symbol}: lost {COMMIT_ATTEMPTS} optimistic writes in a row; another writer "
                       "is changing this symbol's state in a loop")


@dg.asset(**_common, kinds={"python"},
          description="The symbol's state transition this alert caused (state before and after, outcome, "
                      "reason, actions), committed once with a version check.")
def transition(context: dg.AssetExecutionContext, alert: pd.DataFrame, symbol_state: SymbolStateResource,
               trend_dmi: TrendDmiSettings) -> dg.Output[pd.DataFrame]:
    event = _event_from(alert)
    now = datetime.now(UTC)
    instrument = resolve_instrument(event.symbol, trend_dmi.instruments, event.at.date())
    recorded = decide(symbol_state.get(), event, instrument, now=now,
                      max_age=timedelta(seconds=trend_dmi.max_alert_age_seconds))
    before, after = recorded.state_before or {}, recorded.state_after
    context.log.info(f"{recorded.symbol}: {recorded.outcome}: {recorded.reason}")
    frame = pd.DataFrame([{
        "alert_id": recorded.alert_id, "ticker": recorded.symbol, "instrument": recorded.details.get("instrument"),
        "outcome": recorded.outcome, "reason": recorded.reason, "actions": ",".join(recorded.actions),
        "position_before": before.get("position", "NONE"), "position_after": after.get("position"),
        "trend_before": before.get("trend_color"), "trend_after": after.get("trend_color"),
        "waiting_before": bool(before.get("waiting_for_reentry", False)),
        "waiting_after": bool(after.get("waiting_for_reentry")), "version": recorded.version_after,
        "price": recorded.details.get("price"),
    }])
    return dg.Output(frame, metadata={
        "outcome": recorded.outcome, "reason": recorded.reason,
        "actions": ", ".join(recorded.actions) or "-",
        "instrument": str(recorded.details.get("instrument")),
        "state_before": dg.MetadataValue.json(recorded.state_before or {}),
        "state_after": dg.MetadataValue.json(dict(after)), "version": recorded.version_after,
    })


def plan_actions(row: pd.Series, quantity: float):
    """The orders for the transition's actions at the broker's current position: a close
    is the whole position (none if already flat), an entry `quantity`."""
    instrument, price = row["instrument"], float(row["price"])
    actions = [machine.Action(a) for a in str(row["actions"]).split(",") if a]

    def plan(state: TickState) -> TickPlan:
        held = state.positions.get(instrument, 0.0)
        orders, notes = [], [f"{row['outcome']}: {row['reason']}"]
        for action in actions:
            if action.opens:
                qty = quantity
            else:
                qty = held if action is machine.Action.CLOSE_LONG else -held
                if qty <= 0:
                    notes.append(f"{action.value}: nothing to close at the broker ({instrument} {held:g})")
                    continue
            orders.append(PlannedOrder(instrument, Side(action.side), qty, action.leg, price,
                                       f"{row['ticker']} alert {row['alert_id']}: {action.value}"))
        return TickPlan(orders=orders, notes=notes)

    return plan


@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL,
          description="The alert's orders (a flip is two legs: close, then enter), recorded in the ledger "
                      "before the broker call, placed exactly once per (alert, leg).")
def orders(context: dg.AssetExecutionContext, transition: pd.DataFrame, trend_dmi_broker: BrokerResource,
           ledger: LedgerResource, trend_dmi: TrendDmiSettings, notifier: NotifierResource
           ) -> dg.Output[pd.DataFrame]:
    row = transition.iloc[0]
    at = _alert_time(context.partition_key)
    prices = {row["instrument"]: float(row["price"])} if row["instrument"] else {}
    frame, metadata = place_orders(
        context, flow=FLOW, broker=trend_dmi_broker.get(), ledger=ledger.get(), notifier=notifier,
        bar_end=at, prices=prices, plan=plan_actions(row, trend_dmi.quantity_for(row["ticker"])),
        kill_switch=settings.kill_switch_engaged(), forward_only=False)
    return dg.Output(frame, metadata={"outcome": row["outcome"], **metadata})


def _alert_time(partition_key: str) -> datetime:
    return datetime.strptime(partition_key[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


@dg.asset(**_common, kinds={"python"}, pool=BROKER_POOL, deps=[orders], io_manager_key=LEDGER_IO_MANAGER,
          description="Fills of the alert's orders, confirmed at the broker and written to the ledger.")
def transactions(context: dg.AssetExecutionContext, trend_dmi_broker: BrokerResource, ledger: LedgerResource
                 ) -> dg.Output[pd.DataFrame]:
    return record_fills(context, flow=FLOW, broker=trend_dmi_broker.get(), ledger=ledger.get())


@dg.asset(**_common, kinds={"python"}, deps=[transactions], io_manager_key=LEDGER_IO_MANAGER,
          check_specs=[dg.AssetCheckSpec(RECONCILE_CHECK, asset=dg.AssetKey([*PREFIX, "equity"]),
                                         description="ledger positions (baseline + fills) equal the broker's")],
          description="Account value after the alert, recorded in the ledger; the curve up to this alert.")
def equity(context: dg.AssetExecutionContext, trend_dmi_broker: BrokerResource, ledger: LedgerResource,
           notifier: NotifierResource) -> Iterator[dg.Output | dg.AssetCheckResult]:
    yield from settle(context, flow=FLOW, broker=trend_dmi_broker.get(), ledger=ledger.get(), notifier=notifier,
                      bar_end=_alert_time(context.partition_key), check_key=dg.AssetKey([*PREFIX, "equity"]),
                      forward_only=False)


FLOW_ASSETS = [alert, transition, orders, transactions, equity]

trend_dmi_alert_job = dg.define_asset_job(
    name="trend_dmi_alert_job",
    selection=dg.AssetSelection.assets(*FLOW_ASSETS),
    executor_def=bounded_in_process_executor,
    description="One TradingView alert through the trend + DMI flow (run per alert partition).",
)
