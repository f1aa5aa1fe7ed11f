"""The embedded paper broker: a cash account simulated in a SQLite file.

Market orders fill immediately at the request's `reference_price` (the tick's price),
moved against us by `slippage_bps`, with `commission_per_share`. The state (cash,
positions, orders, last prices) lives in one SQLite file, so it survives processes and
two overlapping runs see one consistent account. Idempotent on client order id:
submitting an id it already holds returns that order and changes nothing.

A cash account by default: no margin, no shorting. Buying more than cash allows, or
selling more than is held, is rejected with the reason (the same typed `OrderRejected` a
real broker raises). `allow_short=True` (the futures and CFD flows, which go short as a
matter of course) lets a sell go below zero: the proceeds are cash, the short position
is marked at the last price (equity = cash + signed qty x price), a buy covers it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.execution import flatten_request
from trading_assets.core.ports import (
    Account,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    Position,
    Side,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS account (account_id TEXT PRIMARY KEY, cash REAL NOT NULL);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY, qty REAL NOT NULL, avg_entry_price REAL NOT NULL);
CREATE TABLE IF NOT EXISTS prices (symbol TEXT PRIMARY KEY, price REAL NOT NULL, as_of TEXT);
CREATE TABLE IF NOT EXISTS orders (
    client_order_id TEXT PRIMARY KEY, broker_order_id TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL, qty REAL NOT NULL, order_type TEXT NOT NULL, limit_price REAL,
    status TEXT NOT NULL, filled_qty REAL NOT NULL, filled_avg_price REAL,
    commission REAL NOT NULL, submitted_at TEXT NOT NULL, filled_at TEXT, reason TEXT);
"""


def _now() -> datetime:
    return datetime.now(UTC)


def _average_entry(held: float, avg: float, new_qty: float, fill_price: float) -> float:
    """Entry price of the signed position after a fill: weighted when it grows, kept when
    it shrinks, the fill's price for what is left when it crosses zero, 0 when flat."""
    if abs(new_qty) < 1e-12:
        return 0.0
    if held == 0 or (held > 0) != (new_qty > 0):
        return fill_price
    if abs(new_qty) > abs(held):
        return (abs(held) * avg + (abs(new_qty) - abs(held)) * fill_price) / abs(new_qty)
    return avg


class PaperBroker:
    """Simulated broker account persisted in SQLite (see module docstring)."""

    name = "paper"

    def __init__(
        self,
        path: str | Path,
        starting_cash: float = 100_000.0,
        commission_per_share: float = 0.0,
        slippage_bps: float = 0.0,
        account_id: str = "paper",
        allow_short: bool = False,
    ) -> None:
        if starting_cash < 0 or commission_per_share < 0 or slippage_bps < 0:
            raise ValueError("starting_cash, commission_per_share and slippage_bps must be >= 0")
        self.path = Path(path)
        self.account_id = account_id
        self.commission_per_share = commission_per_share
        self.slippage_bps = slippage_bps
        self.allow_short = allow_short
        ensure_schema(self.path, _SCHEMA)
        with transaction(self.path) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO account (account_id, cash) VALUES (?, ?)",
                (account_id, float(starting_cash)),
            )

    # ------------------------------------------------------------------ reads
    def account(self) -> Account:
        with reading(self.path) as conn:
            cash = conn.execute(
                "SELECT cash FROM account WHERE account_id = ?", (self.account_id,)
            ).fetchone()["cash"]
            value = sum(p.qty * (p.market_price or p.avg_entry_price) for p in self._positions(conn))
        return Account(self.account_id, cash=cash, equity=cash + value, buying_power=cash)

    def positions(self) -> list[Position]:
        with reading(self.path) as conn:
            return self._positions(conn)

    def _positions(self, conn) -> list[Position]:
        rows = conn.execute(
            "SELECT p.symbol, p.qty, p.avg_entry_price, pr.price FROM positions p "
            "LEFT JOIN prices pr ON pr.symbol = p.symbol WHERE p.qty != 0 ORDER BY p.symbol"
        ).fetchall()
        return [Position(r[0], r[1], r[2], r[3]) for r in rows]

    def get_order(self, client_order_id: str) -> Order | None:
        with reading(self.path) as conn:
            row = conn.execute(
                "SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        return None if row is None else _order_from_row(row)

    def orders(self) -> list[Order]:
        """Every order the account has seen, oldest first (for reconciliation and tests)."""
        with reading(self.path) as conn:
            rows = conn.execute("SELECT * FROM orders ORDER BY rowid").fetchall()
        return [_order_from_row(r) for r in rows]

    # ------------------------------------------------------------------ writes
    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        with transaction(self.path) as conn:
            conn.executemany(
                "INSERT INTO prices (symbol, price, as_of) VALUES (?, ?, ?) "
                "ON CONFLICT(symbol) DO UPDATE SET price = excluded.price, as_of = excluded.as_of",
                [(s, float(p), as_of.isoformat()) for s, p in prices.items()],
            )

    def submit_order(self, request: OrderRequest) -> Order:
        if request.qty <= 0:
            raise OrderRejected(f"qty must be positive, got {request.qty}", broker=self.name,
                                reason="invalid qty")
        if request.order_type not in ("market", "limit"):
            raise OrderRejected(
                f"paper broker supports market and limit orders, not {request.order_type!r}",
                broker=self.name, reason="unsupported order type")
        with transaction(self.path) as conn:
            row = conn.execute(
                "SELECT * FROM orders WHERE client_order_id = ?", (request.client_order_id,)
            ).fetchone()
            if row is not None:
                return _order_from_row(row)  # idempotent: never a second order
            price = request.reference_price
            if price is None:
                last = conn.execute("SELECT price FROM prices WHERE symbol = ?", (request.symbol,)).fetchone()
                price = None if last is None else last["price"]
            if price is None or not price > 0:
                raise OrderRejected(
                    f"no price for {request.symbol}: paper fills need a reference price",
                    broker=self.name, reason="no price")
            slip = self.slippage_bps / 10_000.0
            fill_price = price * (1 + slip) if request.side is Side.BUY else price * (1 - slip)
            now = _now()
            marketable = request.order_type == "market" or (
                request.side is Side.BUY and request.limit_price >= fill_price
            ) or (request.side is Side.SELL and request.limit_price <= fill_price)
            if not marketable:
                self._insert_order(conn, request, OrderStatus.ACCEPTED, 0.0, None, 0.0, now, None, None)
                return self._fetch(conn, request.client_order_id)
            commission = self.commission_per_share * request.qty
            cash = conn.execute("SELECT cash FROM account WHERE account_id = ?", (self.account_id,)).fetchone()["cash"]
            pos = conn.execute(
                "SELECT qty, avg_entry_price FROM positions WHERE symbol = ?", (request.symbol,)
            ).fetchone()
            held, avg = (pos["qty"], pos["avg_entry_price"]) if pos else (0.0, 0.0)
            if request.side is Side.BUY:
                cost = request.qty * fill_price + commission
                if cost > cash + 1e-9:
                    raise OrderRejected(
                        f"insufficient buying power: order costs {cost:.2f}, cash is {cash:.2f}",
                        broker=self.name, reason="insufficient buying power")
                new_qty = held + request.qty
                new_cash = cash - cost
            else:
                if request.qty > held + 1e-9 and not self.allow_short:
                    raise OrderRejected(
                        f"insufficient qty: selling {request.qty:g} {request.symbol}, holding {held:g}",
                        broker=self.name, reason="insufficient qty")
                new_qty = held - request.qty
                new_cash = cash + request.qty * fill_price - commission
            new_avg = _average_entry(held, avg, new_qty, fill_price)
            conn.execute("UPDATE account SET cash = ? WHERE account_id = ?", (new_cash, self.account_id))
            conn.execute(
                "INSERT INTO positions (symbol, qty, avg_entry_price) VALUES (?, ?, ?) "
                "ON CONFLICT(symbol) DO UPDATE SET qty = excluded.qty, avg_entry_price = excluded.avg_entry_price",
                (request.symbol, new_qty, new_avg),
            )
            conn.execute(
                "INSERT INTO prices (symbol, price, as_of) VALUES (?, ?, ?) ON CONFLICT(symbol) DO NOTHING",
                (request.symbol, price, now.isoformat()),
            )
            self._insert_order(conn, request, OrderStatus.FILLED, request.qty, fill_price, commission, now, now, None)
            return self._fetch(conn, request.client_order_id)

    def cancel_order(self, client_order_id: str) -> Order | None:
        with transaction(self.path) as conn:
            row = conn.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
            if row is None:
                return None
            if not OrderStatus(row["status"]).is_final:
                conn.execute("UPDATE orders SET status = ? WHERE client_order_id = ?",
                             (OrderStatus.CANCELED.value, client_order_id))
            return self._fetch(conn, client_order_id)

    def close_position(self, symbol: str, client_order_id: str) -> Order | None:
        existing = self.get_order(client_order_id)
        if existing is not None:
            return existing
        request = flatten_request(self.positions(), symbol, client_order_id)
        return None if request is None else self.submit_order(request)

    # ------------------------------------------------------------------ internals
    def _insert_order(self, conn, req: OrderRequest, status: OrderStatus, filled_qty: float,
                      fill_price: float | None, commission: float, submitted: datetime,
                      filled: datetime | None, reason: str | None) -> None:
        conn.execute(
            "INSERT INTO orders VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (req.client_order_id, str(uuid.uuid4()), req.symbol, req.side.value, req.qty,
             req.order_type, req.limit_price, status.value, filled_qty, fill_price, commission,
             submitted.isoformat(), filled.isoformat() if filled else None, reason),
        )

    @staticmethod
    def _fetch(conn, client_order_id: str) -> Order:
        return _order_from_row(
            conn.execute("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        )


def _order_from_row(row) -> Order:
    return Order(
        client_order_id=row["client_order_id"],
        broker_order_id=row["broker_order_id"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        qty=row["qty"],
        status=OrderStatus(row["status"]),
        filled_qty=row["filled_qty"],
        filled_avg_price=row["filled_avg_price"],
        commission=row["commission"],
        submitted_at=datetime.fromisoformat(row["submitted_at"]),
        filled_at=datetime.fromisoformat(row["filled_at"]) if row["filled_at"] else None,
        reason=row["reason"],
    )
