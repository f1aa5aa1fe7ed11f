"""Exactly-once order execution over the Broker and Ledger protocols.

The protocol, per tick:
1. `sync_open_intents`: every intent of the flow that is not final is looked up at the
   broker by client order id and its fills recorded (recovers a crash between the broker
   call and the ledger write in an earlier run).
2. `reconcile`: ledger positions (opening baseline + every fill) must equal the broker's;
   drift stops the flow before it acts.
3. `execute_plan`: the tick's plan is written to the ledger atomically *before* any broker
   call, keyed by (flow, partition). A rerun finds the stored plan and only resolves it.
   Each leg: look up by client order id; if the broker has it, adopt it; otherwise mark
   it `submitting` and POST once. An ambiguous failure is resolved by lookup, never by a
   blind resend; a business reject is recorded with the broker's reason.

No Dagster here: the assets call these functions, and so can any other driver.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trading_assets.core.ports import (
    FINAL_INTENT_STATUSES,
    AmbiguousOrderError,
    Broker,
    BrokerError,
    IntentStatus,
    KillSwitchEngaged,
    Ledger,
    Order,
    OrderIntent,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    Position,
    Side,
    Transaction,
)

log = logging.getLogger(__name__)

def client_order_id(flow: str, symbol: str, partition_key: str, leg: str) -> str:
    """Deterministic id for one order leg: same inputs, same id, in every run.

    At most 30 characters of [A-Za-z0-9-] so it is valid as an Alpaca client_order_id, an
    IG dealReference and a Tradovate clOrdId. The readable parts live in the ledger row.
    """
    abbrev = "".join(word[0] for word in flow.split("_") if word)[:4] or "x"
    digest = hashlib.sha256(f"{flow}|{symbol}|{partition_key}|{leg}".encode()).hexdigest()
    return f"{abbrev}-{digest[: 29 - len(abbrev)]}"


# Attached bracket legs (take-profit, stop-loss) are ledger intents of the entry's tick with
# ids derived from the entry's: never sent as an order of their own (the broker holds them
# with the entry), resolved like any order by `Broker.get_order(leg_id)`:
#   None      the broker never saw the entry (or cannot tell yet)
#   ACCEPTED  the entry's position is open and the leg is working
#   FILLED    this leg closed the position (filled_qty, filled_avg_price = exit, filled_at)
#   CANCELED  the position was closed otherwise (the other leg, or another order)
BRACKET_LEGS = {"take_profit": "tp", "stop_loss": "sl"}


def bracket_leg_id(entry_client_order_id: str, kind: str) -> str:
    """The id of an entry's attached take-profit or stop-loss leg (`kind` a BRACKET_LEGS key)."""
    return f"{entry_client_order_id}:{BRACKET_LEGS[kind]}"


def parse_bracket_leg_id(client_order_id: str) -> tuple[str, str] | None:
    """(entry client order id, kind) of a bracket leg id, None for any other id."""
    entry, sep, tag = client_order_id.rpartition(":")
    kinds = {v: k for k, v in BRACKET_LEGS.items()}
    return (entry, kinds[tag]) if sep and entry and tag in kinds else None


def flatten_request(
    positions: Sequence[Position], symbol: str, client_order_id: str, reference_price: float | None = None
) -> OrderRequest | None:
    """The market order that closes `symbol`'s position (None when flat).

    Brokers whose own "close position" call cannot carry a client order id place this
    order instead, so a retried close is recognised by its id and never doubles.
    """
    pos = next((p for p in positions if p.symbol == symbol), None)
    if pos is None or abs(pos.qty) < 1e-12:
        return None
    return OrderRequest(
        client_order_id=client_order_id, symbol=symbol, side=Side.SELL if pos.qty > 0 else Side.BUY,
        qty=abs(pos.qty), reference_price=reference_price if reference_price is not None else pos.market_price,
    )


def account_key(broker: Broker, account_id: str) -> str:
    """Ledger key of a broker account: the same account id at two brokers never mixes."""
    return f"{broker.name}:{account_id}"


@dataclass(frozen=True)
class Drift:
    symbol: str
    ledger_qty: float
    broker_qty: float

    def __str__(self) -> str:
        return f"{self.symbol}: ledger {self.ledger_qty:g} vs broker {self.broker_qty:g}"


@dataclass
class ExecutionReport:
    """What one tick did at the broker."""

    intents: list[OrderIntent]
    new_plan: bool
    submitted: list[str] = field(default_factory=list)  # client ids POSTed in this run
    adopted: list[str] = field(default_factory=list)  # found at the broker, not resent
    rejected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already final in the ledger
    claimed_elsewhere: list[str] = field(default_factory=list)  # another run is placing it


def transaction_from_order(intent: OrderIntent, order: Order, partition_key: str | None = None) -> Transaction:
    """The ledger's fill of an intent's order, booked to `partition_key` (default: the
    intent's own tick; a bracket leg's exit is booked to the tick it happened in)."""
    return Transaction(
        transaction_id=order.client_order_id,
        account=intent.account,
        flow=intent.flow,
        partition_key=partition_key or intent.partition_key,
        symbol=order.symbol,
        side=order.side,
        qty=order.filled_qty,
        price=float(order.filled_avg_price or 0.0),
        commission=order.commission,
        kind="fill",
        executed_at=order.filled_at or order.submitted_at or datetime.now(UTC),
        client_order_id=order.client_order_id,
    )


ExitPartition = Callable[[datetime], str]


def bracket_prices(intent: OrderIntent) -> dict[str, float]:
    """The take-profit / stop-loss levels an entry intent carries ({} without brackets)."""
    return {k: float(intent.extra[k]) for k in BRACKET_LEGS if intent.extra.get(k) is not None}


def bracket_legs(entry: OrderIntent) -> list[OrderIntent]:
    """The attached legs of a bracketed entry, as intents of the entry's tick: the
    opposite side, the same size, a limit (take-profit) or stop (stop-loss) at the level.
    Never sent on their own: the broker holds them with the entry (see BRACKET_LEGS)."""
    exit_side = Side.SELL if entry.side is Side.BUY else Side.BUY
    return [
        OrderIntent(client_order_id=bracket_leg_id(entry.client_order_id, kind), flow=entry.flow,
                    partition_key=entry.partition_key, account=entry.account, symbol=entry.symbol,
                    side=exit_side, qty=entry.qty, leg=f"{entry.leg}:{kind}", reference_price=level,
                    order_type="limit" if kind == "take_profit" else "stop",
                    extra={"entry": entry.client_order_id, "bracket": kind})
        for kind, level in bracket_prices(entry).items()
    ]


def _arm_legs(ledger: Ledger, entry: OrderIntent) -> None:
    """Once an entry is final its legs leave `planned`: working (accepted) if it filled,
    canceled if it did not. Legs already past planned are left alone."""
    if not bracket_prices(entry) or entry.status not in FINAL_INTENT_STATUSES:
        return
    ids = {bracket_leg_id(entry.client_order_id, k) for k in bracket_prices(entry)}
    for leg in ledger.intents(entry.flow, entry.partition_key):
        if leg.client_order_id in ids and leg.status is IntentStatus.PLANNED:
            if entry.filled_qty > 0:
                ledger.update_intent(leg.client_order_id, status=IntentStatus.ACCEPTED, qty=entry.filled_qty,
                                     reason=None)
            else:
                ledger.update_intent(leg.client_order_id, status=IntentStatus.CANCELED,
                                     reason=f"entry {entry.client_order_id} {entry.status}: "
                                            f"{entry.reason or 'no fill'}")


def apply_order(ledger: Ledger, intent: OrderIntent, order: Order, *,
                exit_partition: ExitPartition | None = None) -> OrderIntent:
    """Record what the broker says about an intent's order (status and fills). A bracket
    leg's fill is booked to `exit_partition(filled_at)`, the tick whose bar it happened in."""
    status = IntentStatus.of(order.status)
    unchanged = (status is intent.status and order.filled_qty == intent.filled_qty
                 and order.broker_order_id == intent.broker_order_id)
    if unchanged and not order.filled_qty:
        return intent  # a working order that is still working: nothing to write
    ledger.update_intent(
        intent.client_order_id,
        status=status,
        broker_order_id=order.broker_order_id,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        reason=order.reason,
    )
    if order.filled_qty > 0:
        tick = None
        if exit_partition is not None and parse_bracket_leg_id(intent.client_order_id):
            tick = exit_partition(order.filled_at or order.submitted_at or datetime.now(UTC))
        ledger.record_transaction(transaction_from_order(intent, order, tick))
    intent.status = status
    intent.broker_order_id = order.broker_order_id
    intent.filled_qty = order.filled_qty
    intent.filled_avg_price = order.filled_avg_price
    intent.reason = order.reason
    _arm_legs(ledger, intent)
    return intent


def sync_open_intents(broker: Broker, ledger: Ledger, flow: str, partition_key: str | None = None, *,
                      exit_partition: ExitPartition | None = None) -> list[OrderIntent]:
    """Look up every non-final intent at the broker and record its status and fills
    (working bracket legs included: a triggered take-profit or stop-loss is found here)."""
    resolved = []
    for intent in ledger.intents(flow, partition_key, open_only=True):
        if intent.status is IntentStatus.PLANNED:
            continue  # never sent; execute_plan decides
        order = broker.get_order(intent.client_order_id)
        if order is None:
            log.warning("order %s (%s %s %s) not found at %s; still %s",
                        intent.client_order_id, intent.side, intent.qty, intent.symbol, broker.name,
                        intent.status)
            continue
        before = (intent.status, intent.filled_qty)
        apply_order(ledger, intent, order, exit_partition=exit_partition)
        if (intent.status, intent.filled_qty) != before:
            resolved.append(intent)
    return resolved


def ensure_baseline(broker: Broker, ledger: Ledger, account: str, flow: str, as_of: datetime) -> bool:
    """Capture the account's opening positions the first time any flow trades it."""
    if ledger.has_baseline(account):
        return False
    opening = [
        Transaction(
            transaction_id=f"baseline:{account}:{p.symbol}", account=account, flow=flow,
            partition_key="baseline", symbol=p.symbol, side=Side.BUY if p.qty > 0 else Side.SELL,
            qty=abs(p.qty), price=p.avg_entry_price, commission=0.0, kind="baseline",
            executed_at=as_of,
        )
        for p in broker.positions()
    ]
    return ledger.record_baseline(account, opening)


def account_drift(broker: Broker, ledger: Ledger, flow: str, account: str, *,
                  exit_partition: ExitPartition | None = None) -> tuple[list[Drift], dict[str, float]]:
    """(drift, broker positions) for the account. Another run on the account (a second
    alert worker) may be placing an order right now, and a working take-profit or
    stop-loss may have fired at the broker, so drift seen while this flow has orders in
    flight or legs working is looked at again after settling them; a symbol whose order
    is still on its way (sent, not yet answered) is not called drift."""
    for attempt in range(3):
        positions = {p.symbol: p.qty for p in broker.positions()}
        drift = reconcile(ledger.net_positions(account), positions)
        open_intents = [i for i in ledger.intents(flow, open_only=True) if i.status is not IntentStatus.PLANNED]
        sent = {i.symbol for i in open_intents if not parse_bracket_leg_id(i.client_order_id)}
        working = {i.symbol for i in open_intents} - sent
        if not drift or not (sent or working & {d.symbol for d in drift}):
            return drift, positions
        if attempt == 2:
            return [d for d in drift if d.symbol not in sent], positions
        sync_open_intents(broker, ledger, flow, exit_partition=exit_partition)
    raise AssertionError("unreachable")


def reconcile(
    ledger_positions: dict[str, float], broker_positions: dict[str, float], tolerance: float = 1e-6
) -> list[Drift]:
    """Symbols whose quantity differs between the ledger and the broker."""
    drift = []
    for symbol in sorted(set(ledger_positions) | set(broker_positions)):
        lq, bq = ledger_positions.get(symbol, 0.0), broker_positions.get(symbol, 0.0)
        if abs(lq - bq) > tolerance:
            drift.append(Drift(symbol, lq, bq))
    return drift


def execute_plan(
    broker: Broker,
    ledger: Ledger,
    intents: Sequence[OrderIntent],
    flow: str,
    partition_key: str,
    kill_switch: bool = False,
) -> ExecutionReport:
    """Record the plan (once per tick) and drive each leg to the broker exactly once."""
    if kill_switch and not ledger.has_plan(flow, partition_key) and intents:
        raise KillSwitchEngaged(
            f"kill switch engaged: {len(intents)} order(s) for {flow} {partition_key} not placed",
            broker=broker.name)
    new_plan = ledger.record_plan(flow, partition_key, intents)
    report = ExecutionReport(intents=ledger.intents(flow, partition_key), new_plan=new_plan)
    for intent in report.intents:
        if intent.status in FINAL_INTENT_STATUSES:
            report.skipped.append(intent.client_order_id)
            continue
        if parse_bracket_leg_id(intent.client_order_id):
            continue  # placed with its entry; armed when the entry is final
        existing = broker.get_order(intent.client_order_id)
        if existing is not None:
            apply_order(ledger, intent, existing)
            report.adopted.append(intent.client_order_id)
            continue
        if kill_switch:
            raise KillSwitchEngaged(
                f"kill switch engaged: {intent.client_order_id} not placed", broker=broker.name)
        levels = bracket_prices(intent)
        request = OrderRequest(
            client_order_id=intent.client_order_id, symbol=intent.symbol, side=intent.side,
            qty=intent.qty, order_type=intent.order_type, reference_price=intent.reference_price,
            take_profit=levels.get("take_profit"), stop_loss=levels.get("stop_loss"),
        )
        if not ledger.claim_intent(intent.client_order_id, intent.status):
            # Another run claimed this leg after we read the plan: it owns the POST.
            report.claimed_elsewhere.append(intent.client_order_id)
            log.info("order %s is being placed by another run; not sending it again", intent.client_order_id)
            continue
        intent.status = IntentStatus.SUBMITTING
        try:
            order = broker.submit_order(request)
        except OrderRejected as exc:
            ledger.update_intent(intent.client_order_id, status=IntentStatus.REJECTED, reason=exc.reason or str(exc))
            intent.status, intent.reason = IntentStatus.REJECTED, exc.reason or str(exc)
            _arm_legs(ledger, intent)
            report.rejected.append(intent.client_order_id)
            log.warning("order %s rejected by %s: %s", intent.client_order_id, broker.name, exc)
            continue
        except AmbiguousOrderError:
            order = broker.get_order(intent.client_order_id)
            if order is None:
                ledger.update_intent(intent.client_order_id, status=IntentStatus.UNKNOWN,
                                     reason="order POST outcome unknown; not found by client id")
                raise
        except BrokerError as exc:
            # Definitely not accepted (rate limit, session, validation): back to planned.
            ledger.update_intent(intent.client_order_id, status=IntentStatus.PLANNED, reason=str(exc))
            raise
        apply_order(ledger, intent, order)
        report.submitted.append(intent.client_order_id)
        if order.status is OrderStatus.REJECTED:
            report.rejected.append(intent.client_order_id)
    if any(parse_bracket_leg_id(i.client_order_id) for i in report.intents):
        report.intents = ledger.intents(flow, partition_key)  # the legs armed (or canceled) above
    return report
