"""The tick engine: one protocol every scheduled or alert-driven flow trades through.

A flow supplies its prices and a plan function; the engine does the rest, in order:

1. resolve open intents of earlier ticks at the broker (a crash between POST and ledger
   write is recovered here);
2. capture the account's opening baseline the first time it is traded;
3. reconcile ledger positions with the broker's: drift stops the tick before it acts;
4. gates: orders only move forward in time (a tick older than the newest processed one
   computes signals but orders nothing, and never marks the account to old prices) and,
   if set, only for a tick that closed recently;
5. mark the (paper) account to the tick's prices, plan, and execute the plan exactly once
   (`core.execution.execute_plan`).

Brackets: a planned order may carry a take-profit and a stop-loss. The engine records them
as the entry's two legs (`core.execution.bracket_legs`) in the same plan; they go to the
broker with the entry, are armed when it fills, and are resolved like any open order at
every later tick's step 1. A broker that simulates its fills (the paper broker) is shown
the tick's bars first, so a leg a bar crossed fills before anything else; a leg's fill is
booked to the tick whose bar it happened in (`exit_partition`).

`settle_equity` applies the equity-history rule after the fills: the account as it is
now is the value of a tick only if no later tick has been processed; an older tick keeps
what it recorded, or records nothing. No Dagster here: assets call these functions and
turn the reports into metadata.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from trading_assets.core.execution import (
    Drift,
    ExecutionReport,
    ExitPartition,
    account_drift,
    account_key,
    bracket_legs,
    client_order_id,
    ensure_baseline,
    execute_plan,
    sync_open_intents,
)
from trading_assets.core.ports import (
    Account,
    Broker,
    EquitySnapshot,
    FillSimulator,
    Ledger,
    OrderIntent,
    Side,
)


@dataclass(frozen=True)
class PlannedOrder:
    """One order leg a strategy wants for this tick (the engine gives it its id)."""

    symbol: str
    side: Side
    qty: float
    leg: str  # entry | exit | cover | ... : part of the client order id, unique per tick
    reference_price: float
    reason: str = ""
    order_type: str = "market"
    # attached at the broker with the entry (IG stopLevel/limitLevel; the paper broker
    # simulates them on later bars): the engine records them as the entry's legs
    take_profit: float | None = None
    stop_loss: float | None = None


@dataclass
class TickPlan:
    """What a plan function returns: the orders and why (notes shown to the user)."""

    orders: Sequence[PlannedOrder] = ()
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TickState:
    """What a plan function sees: the account after reconciliation, at this tick's prices."""

    account: Account
    positions: Mapping[str, float]
    prices: Mapping[str, float]


PlanFunction = Callable[[TickState], TickPlan]


class PositionDrift(Exception):
    """Ledger and broker positions disagree: the tick does not trade until reconciled."""

    def __init__(self, drift: Sequence[Drift]) -> None:
        super().__init__("ledger and broker positions disagree; not trading until reconciled: "
                         + "; ".join(map(str, drift)))
        self.drift = list(drift)


@dataclass
class TickReport:
    """What one tick did, for the asset's metadata and the CLI's table."""

    partition_key: str
    account: Account  # before this tick's orders
    intents: list[OrderIntent]
    execution: ExecutionReport
    notes: list[str]
    recovered: int  # open intents of earlier ticks resolved at the broker
    gated: str | None  # why no orders were planned: "older" | "stale" | None
    newest: bool  # this tick is (or ties) the newest processed one
    newest_key: str | None  # the newest tick processed before this one (None: the first)


def run_tick(
    broker: Broker,
    ledger: Ledger,
    *,
    flow: str,
    partition_key: str,
    bar_end: datetime,
    prices: Mapping[str, float],
    plan: PlanFunction,
    kill_switch: bool = False,
    max_tick_age_minutes: int | None = None,
    now: datetime | None = None,
    forward_only: bool = True,
    bars: pd.DataFrame | None = None,
    exit_partition: ExitPartition | None = None,
) -> TickReport:
    """Sync, baseline, reconcile, gate, mark, plan and execute one tick exactly once.

    `forward_only` (scheduled flows): a tick older than the newest processed one plans
    nothing. Alert-driven flows pass False: their partitions are alerts of many symbols,
    and the order that matters (per symbol) is kept by the flow's own state machine.

    Bracketed flows pass `bars` (shown first to a broker that simulates its fills, so a
    working take-profit or stop-loss a bar crossed fills before anything else) and
    `exit_partition` (the tick a bracket exit at a given time belongs to; default this one)."""
    now = now or datetime.now(UTC)
    latest = ledger.latest_plan_key(flow)
    newest = latest is None or partition_key >= latest or not forward_only
    if newest and bars is not None and isinstance(broker, FillSimulator):
        broker.observe_bars(bars)
    exit_partition = exit_partition or (lambda _at: partition_key)
    recovered = sync_open_intents(broker, ledger, flow, exit_partition=exit_partition)
    account = broker.account()
    acct = account_key(broker, account.account_id)
    ensure_baseline(broker, ledger, acct, flow, now)
    drift, positions = account_drift(broker, ledger, flow, acct, exit_partition=exit_partition)
    if drift:
        raise PositionDrift(drift)

    if newest:
        broker.observe_prices(prices, bar_end)  # never mark the account to an old tick
    age_min = (now - bar_end).total_seconds() / 60
    notes: list[str] = []
    gated: str | None = None
    if not newest:
        gated = "older"
        notes.append(f"tick {partition_key} is older than the newest processed tick {latest}: "
                     "signals only, no orders")
    elif max_tick_age_minutes is not None and age_min > max_tick_age_minutes and not ledger.has_plan(
            flow, partition_key):
        gated = "stale"
        notes.append(f"tick closed {age_min:.0f} min ago (> {max_tick_age_minutes}): signals only, no orders")
    planned: Sequence[PlannedOrder] = ()
    if gated is None:
        decision = plan(TickState(account=account, positions=positions, prices=dict(prices)))
        notes.extend(decision.notes)
        planned = decision.orders
    intents: list[OrderIntent] = []
    for o in planned:
        levels = {k: v for k, v in (("take_profit", o.take_profit), ("stop_loss", o.stop_loss)) if v is not None}
        entry = OrderIntent(client_order_id=client_order_id(flow, o.symbol, partition_key, o.leg), flow=flow,
                            partition_key=partition_key, account=acct, symbol=o.symbol, side=o.side, qty=o.qty,
                            leg=o.leg, reference_price=o.reference_price, order_type=o.order_type,
                            extra={"reason": o.reason, **levels})
        intents += [entry, *bracket_legs(entry)]
    execution = execute_plan(broker, ledger, intents, flow, partition_key, kill_switch=kill_switch)
    return TickReport(partition_key=partition_key, account=account, intents=execution.intents,
                      execution=execution, notes=notes, recovered=len(recovered), gated=gated, newest=newest,
                      newest_key=latest)


@dataclass
class EquityOutcome:
    """The tick's account value under the equity-history rule, and the curve up to it."""

    recorded: bool  # written (or rewritten) by this run
    equity: float  # NaN when unknown (an older tick that never ran)
    cash: float
    positions: dict[str, float]
    note: str
    curve: pd.DataFrame  # the flow's equity history up to this tick's bar end
    drift: list[Drift]  # ledger vs broker after the fills (the reconciliation check)

    @property
    def known(self) -> bool:
        return not math.isnan(self.equity)


def settle_equity(broker: Broker, ledger: Ledger, *, flow: str, partition_key: str,
                  bar_end: datetime, forward_only: bool = True,
                  exit_partition: ExitPartition | None = None) -> EquityOutcome:
    """Record the account as this tick's value only if no later tick was processed
    (`forward_only=False`, alert-driven flows: always, as of the alert's time)."""
    account = broker.account()
    acct = account_key(broker, account.account_id)
    drift, positions = account_drift(broker, ledger, flow, acct,
                                     exit_partition=exit_partition or (lambda _at: partition_key))
    latest = ledger.latest_plan_key(flow)
    curve = ledger.equity_curve(flow)
    recorded = curve[curve["partition_key"] == partition_key]
    if latest is None or partition_key >= latest or not forward_only:
        ledger.record_equity(EquitySnapshot(flow, partition_key, acct, bar_end, account.cash,
                                            account.equity, account.buying_power, positions))
        curve = ledger.equity_curve(flow)
        values = (True, account.equity, account.cash, positions, "recorded: the account after this tick")
    elif not recorded.empty:
        row = recorded.iloc[0]
        values = (False, float(row["equity"]), float(row["cash"]), json.loads(row["positions"]),
                  f"{partition_key} is older than the newest processed tick {latest}: keeping its recorded equity")
    else:
        # A backfill of a tick that never ran: today's account is not what it was then.
        values = (False, math.nan, math.nan, {},
                  f"{partition_key} is older than the newest processed tick {latest} and was never "
                  "recorded: no equity written (today's account is not its history)")
    curve = curve[curve["as_of"] <= pd.Timestamp(bar_end)].reset_index(drop=True)
    return EquityOutcome(*values, curve=curve, drift=drift)
