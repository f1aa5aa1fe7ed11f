"""The small protocols the core talks to, and the plain data that crosses them.

Adapters (paper, Alpaca, IG, Tradovate brokers; replay, yfinance, Twelve Data market data;
SQLite or DynamoDB ledgers) implement these. The core and the Dagster layer only ever see
these types, so swapping the embedded default for a production adapter changes nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

import pandas as pd


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(StrEnum):
    """Broker-side order states, normalised across brokers."""

    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_ORDER_STATES


_FINAL_ORDER_STATES = {
    OrderStatus.FILLED,
    OrderStatus.CANCELED,
    OrderStatus.REJECTED,
    OrderStatus.EXPIRED,
}


class IntentStatus(StrEnum):
    """Where one leg of a plan stands in the ledger: ours before the broker answers
    (planned, submitting, unknown), then the broker's order status."""

    PLANNED = "planned"  # recorded, never sent
    SUBMITTING = "submitting"  # the POST is (or was) in flight
    UNKNOWN = "unknown"  # the POST's outcome is unclear and the lookup found nothing yet
    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @classmethod
    def of(cls, status: OrderStatus) -> IntentStatus:
        return cls(status.value)

    @property
    def is_final(self) -> bool:
        return self.value in {s.value for s in _FINAL_ORDER_STATES}


FINAL_INTENT_STATUSES = frozenset(s for s in IntentStatus if s.is_final)
OPEN_INTENT_STATUSES = frozenset(s for s in IntentStatus if not s.is_final)


@dataclass(frozen=True)
class OrderRequest:
    """What we ask a broker to do. `client_order_id` is the idempotency key."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    order_type: str = "market"  # market | limit | stop
    time_in_force: str = "day"
    limit_price: float | None = None
    stop_price: float | None = None
    take_profit: float | None = None  # bracket leg: limit price to take profit at
    stop_loss: float | None = None  # bracket leg: stop price to cut the loss at
    # The price the strategy decided at. Real brokers ignore it; the paper broker fills
    # market orders at it (plus slippage), which is what makes backtest == live possible.
    reference_price: float | None = None


@dataclass(frozen=True)
class Order:
    """A broker's view of an order, normalised."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    qty: float
    status: OrderStatus
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    commission: float = 0.0
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Position:
    symbol: str
    qty: float  # signed: negative is short
    avg_entry_price: float
    market_price: float | None = None

    @property
    def market_value(self) -> float | None:
        return None if self.market_price is None else self.qty * self.market_price


@dataclass(frozen=True)
class Account:
    account_id: str
    cash: float
    equity: float
    buying_power: float
    currency: str = "USD"


# ----------------------------------------------------------------------------- errors


class BrokerError(Exception):
    """Anything a broker said no to, or failed at. `broker` names the adapter."""

    def __init__(self, message: str, *, broker: str = "", reason: str | None = None):
        super().__init__(message)
        self.broker = broker
        self.reason = reason


class OrderRejected(BrokerError):
    """The broker understood the order and refused it (a business reject).

    Covers rejects that arrive inside HTTP 200 (IG `dealStatus: REJECTED`, Tradovate
    `failureReason`). Not retryable as-is; `reason` carries the broker's words.
    """


class AmbiguousOrderError(BrokerError):
    """The order POST may or may not have reached the broker (timeout, 5xx, dropped
    connection). Never resend blindly: look the order up by client order id."""


class RateLimited(BrokerError):
    """The broker or data vendor asked us to slow down; `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class SessionExpired(BrokerError):
    """Credentials/session no longer valid and could not be renewed."""


class KillSwitchEngaged(BrokerError):
    """Order placement is switched off (TRADING_KILL_SWITCH)."""


class LiveTradingNotEnabled(BrokerError):
    """A live (real-money) broker was selected without the explicit live setting."""


class MarketDataError(Exception):
    """A market-data provider could not give us the bars we asked for."""


class UnknownSymbolError(MarketDataError):
    """The provider does not know this symbol."""


# ----------------------------------------------------------------------------- protocols


@runtime_checkable
class Broker(Protocol):
    """A broker account. Every implementation passes the same contract tests.

    - `submit_order` is idempotent on `client_order_id`: submitting an id the broker
      already has returns that order and never places a second one.
    - `get_order` looks an order up by client order id (None if the broker never saw it).
    - Typed errors: `OrderRejected` (with the broker's reason), `AmbiguousOrderError`,
      `RateLimited`, `SessionExpired`.
    """

    name: str

    def account(self) -> Account: ...

    def positions(self) -> list[Position]: ...

    def submit_order(self, request: OrderRequest) -> Order: ...

    def get_order(self, client_order_id: str) -> Order | None: ...

    def cancel_order(self, client_order_id: str) -> Order | None: ...

    def close_position(self, symbol: str, client_order_id: str) -> Order | None: ...

    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        """Tell the broker the latest prices. The paper broker marks to market with
        them; real brokers price their own positions and ignore this."""
        ...


@runtime_checkable
class FillSimulator(Protocol):
    """A broker that simulates its fills (the paper broker): working stop and limit legs
    fill when a bar's range crosses them. Real brokers watch their own markets, so the
    tick engine shows bars only to brokers that have this method."""

    def observe_bars(self, bars: pd.DataFrame) -> None:
        """Bars up to the tick (`core.bars` schema); ones already seen are ignored."""
        ...


@runtime_checkable
class MarketData(Protocol):
    """Bars for many symbols in one frame (see `core.bars` for the schema)."""

    name: str

    def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, interval: str
    ) -> pd.DataFrame:
        """Bars whose *start* lies in [start, end), tz-aware UTC, all symbols stacked."""
        ...


@dataclass
class OrderIntent:
    """One leg of a tick's plan, written to the ledger before any broker call."""

    client_order_id: str
    flow: str
    partition_key: str
    account: str
    symbol: str
    side: Side
    qty: float
    leg: str
    reference_price: float | None = None
    order_type: str = "market"
    status: IntentStatus = IntentStatus.PLANNED
    broker_order_id: str | None = None
    filled_qty: float = 0.0
    filled_avg_price: float | None = None
    reason: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Transaction:
    """A fill (or an opening-balance baseline) as the ledger stores it.

    Same shape as the DynamoDB TransactionTable item: `transaction_id` is the key.
    """

    transaction_id: str
    account: str
    flow: str
    partition_key: str
    symbol: str
    side: Side
    qty: float
    price: float
    commission: float
    kind: str  # fill | baseline
    executed_at: datetime
    client_order_id: str | None = None


@dataclass(frozen=True)
class EquitySnapshot:
    """Account value after a tick; same shape as the DynamoDB EquityTable item."""

    flow: str
    partition_key: str
    account: str
    as_of: datetime
    cash: float
    equity: float
    buying_power: float
    positions: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Ledger(Protocol):
    """Durable record of intents, fills and equity. SQLite locally, DynamoDB on AWS.

    Every write is idempotent on its key, so replaying a tick never double-counts.
    """

    def record_plan(self, flow: str, partition_key: str, intents: Sequence[OrderIntent]) -> bool:
        """Store a tick's plan atomically. False (and nothing written) if the tick
        already has a plan: a rerun then resolves the stored plan, never re-plans."""
        ...

    def has_plan(self, flow: str, partition_key: str) -> bool: ...

    def latest_plan_key(self, flow: str) -> str | None:
        """The newest partition key this flow has planned (orders go forward in time)."""
        ...

    def intents(
        self, flow: str, partition_key: str | None = None, open_only: bool = False
    ) -> list[OrderIntent]: ...

    def update_intent(self, client_order_id: str, **fields: object) -> None: ...

    def claim_intent(self, client_order_id: str, expected: IntentStatus) -> bool:
        """Compare-and-set: move the intent from `expected` to SUBMITTING, only if it is
        still `expected`. False if another run got there first: that run owns the POST,
        so two runs racing one tick send each order once."""
        ...

    def record_transaction(self, txn: Transaction) -> bool:
        """Upsert by `transaction_id`; True if it changed anything."""
        ...

    def transactions(
        self, account: str | None = None, flow: str | None = None, partition_key: str | None = None
    ) -> pd.DataFrame:
        """Transactions, oldest first; `partition_key` (with `flow`) is one tick's fills."""
        ...

    def net_positions(self, account: str) -> dict[str, float]:
        """Baseline plus every fill on the account, per symbol (zeros dropped)."""
        ...

    def has_baseline(self, account: str) -> bool: ...

    def record_baseline(self, account: str, opening: Sequence[Transaction]) -> bool:
        """Capture the account's opening positions once (kind='baseline'), so later
        reconciliation compares broker positions with baseline + our fills."""
        ...

    def record_equity(self, snapshot: EquitySnapshot) -> None: ...

    def equity_curve(self, flow: str) -> pd.DataFrame: ...
