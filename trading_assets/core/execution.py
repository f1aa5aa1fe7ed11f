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
from collections.abc import Sequence
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


def transaction_from_order(intent: OrderIntent, order: Order) -> Transaction:
    return Transaction(
        transaction_id=order.client_order_id,
        account=intent.account,
        flow=intent.flow,
        partition_key=intent.partition_key,
        symbol=order.symbol,
        side=order.side,
        qty=order.filled_qty,
        price=float(order.filled_avg_price or 0.0),
        commission=order.commission,
        kind="fill",
        executed_at=order.filled_at or order.submitted_at or datetime.now(UTC),
        client_order_id=order.client_order_id,
    )


def apply_order(ledger: Ledger, intent: OrderIntent, order: Order) -> OrderIntent:
    """Record what the broker says about an intent's order (status and fills)."""
    status = IntentStatus.of(order.status)
    ledger.update_intent(
        intent.client_order_id,
        status=status,
        broker_order_id=order.broker_order_id,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        reason=order.reason,
    )
    if order.filled_qty > 0:
        ledger.record_transaction(transaction_from_order(intent, order))
    intent.status = status
    intent.broker_order_id = order.broker_order_id
    intent.filled_qty = order.filled_qty
    intent.filled_avg_price = order.filled_avg_price
    intent.reason = order.reason
    return intent


def sync_open_intents(broker: Broker, ledger: Ledger, flow: str, partition_key: str | None = None) -> list[OrderIntent]:
    """Look up every non-final intent at the broker and record its status and fills."""
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
        resolved.append(apply_order(ledger, intent, order))
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


def account_drift(broker: Broker, ledger: Ledger, flow: str, account: str) -> tuple[list[Drift], dict[str, float]]:
    """(drift, broker positions) for the account. Another run on the account (a second
    alert worker) may be placing an order right now, so drift seen while this flow has
    orders in flight is looked at again after settling them; a symbol whose order is
    still on its way (sent, not yet answered) is not called drift."""
    for attempt in range(3):
        positions = {p.symbol: p.qty for p in broker.positions()}
        drift = reconcile(ledger.net_positions(account), positions)
        sent = {i.symbol for i in ledger.intents(flow, open_only=True) if i.status is not IntentStatus.PLANNED}
        if not drift or not sent:
            return drift, positions
        if attempt == 2:
            return [d for d in drift if d.symbol not in sent], positions
        sync_open_intents(broker, ledger, flow)
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
        existing = broker.get_order(intent.client_order_id)
        if existing is not None:
            apply_order(ledger, intent, existing)
            report.adopted.append(intent.client_order_id)
            continue
        if kill_switch:
            raise KillSwitchEngaged(
                f"kill switch engaged: {intent.client_order_id} not placed", broker=broker.name)
        request = OrderRequest(
            client_order_id=intent.client_order_id, symbol=intent.symbol, side=intent.side,
            qty=intent.qty, order_type=intent.order_type, reference_price=intent.reference_price,
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
    return report
