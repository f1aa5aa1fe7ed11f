"""The embedded paper broker: a cash account simulated in a SQLite file.

Market orders fill immediately at the request's `reference_price` (the tick's price),
moved against us by `slippage_bps`, with `commission_per_share`. The state (cash,
positions, orders, last prices) lives in one SQLite file, so it survives processes and
two overlapping runs see one consistent account. Idempotent on client order id:
submitting an id it already holds returns that order and changes nothing.

Brackets: an order with `take_profit` / `stop_loss` leaves two working legs (ids from
`core.execution.bracket_leg_id`) once it fills. `observe_bars` fills them by the
backtester's rules (`core.backtest`), on bars starting after the entry's tick: a bar
that opens beyond a level fills there at the open, else a bar whose range reaches a
level fills at the level, the stop first when both are reached (we cannot know which
came first); a stop pays slippage (a market order), a take-profit does not (a limit).
The other leg is then canceled, as is every working leg once another order flattens or
reverses the position. Levels on the wrong side of the price are rejected, as IG does.

A cash account by default: no margin, no shorting. Buying more than cash allows, or
selling more than is held, is rejected with the reason (the same typed `OrderRejected` a
real broker raises). `allow_short=True` (the futures and CFD flows, which go short as a
matter of course) lets a sell go below zero: the proceeds are cash, the short position
is marked at the last price (equity = cash + signed qty x price), a buy covers it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.execution import bracket_leg_id, flatten_request
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
CREATE TABLE IF NOT EXISTS bracket_legs (
    client_order_id TEXT PRIMARY KEY, entry_id TEXT NOT NULL, symbol TEXT NOT NULL,
    kind TEXT NOT NULL, level REAL NOT NULL, active_from TEXT NOT NULL, checked_through TEXT);
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
            if price is not None:
                self._check_levels(request, price)
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
            self._cancel_stranded_legs(conn, request.symbol, new_qty, request.client_order_id)
            self._attach_legs(conn, request)
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

    def observe_bars(self, bars: pd.DataFrame) -> None:
        """Fill working bracket legs whose level a bar crossed (see the module docstring)."""
        if bars.empty:
            return
        with transaction(self.path) as conn:
            legs = conn.execute(
                "SELECT b.*, o.side, o.qty FROM bracket_legs b JOIN orders o USING (client_order_id) "
                "WHERE o.status = ? ORDER BY b.entry_id, b.kind", (OrderStatus.ACCEPTED.value,)).fetchall()
            by_entry: dict[str, list] = {}
            for leg in legs:
                by_entry.setdefault(leg["entry_id"], []).append(leg)
            symbols = bars["symbol"].to_numpy()
            for entry_legs in by_entry.values():
                self._walk_bars(conn, entry_legs, bars[symbols == entry_legs[0]["symbol"]].sort_index(kind="stable"))

    def _walk_bars(self, conn, legs: list, bars: pd.DataFrame) -> None:
        """One entry's legs down its symbol's bars: the first crossing fills, the other cancels."""
        first = legs[0]
        long = first["side"] == Side.SELL.value  # a long entry's legs sell
        level = {leg["kind"]: leg["level"] for leg in legs}
        tp, sl = level.get("take_profit"), level.get("stop_loss")
        start = pd.Timestamp(first["active_from"])
        if first["checked_through"]:
            start = max(start, pd.Timestamp(first["checked_through"]) + pd.Timedelta(microseconds=1))
        seen = None
        for at, o, h, lo in zip(bars.index, bars["open"], bars["high"], bars["low"], strict=True):
            if at < start or not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo)):
                continue
            seen = at
            hit = _bracket_hit(long, o, h, lo, tp, sl)
            if hit is not None:
                kind, px = hit
                self._fill_leg(conn, next(x for x in legs if x["kind"] == kind), legs, px, at.to_pydatetime())
                return
        if seen is not None:
            conn.execute("UPDATE bracket_legs SET checked_through = ? WHERE entry_id = ?",
                         (seen.isoformat(), first["entry_id"]))

    def _fill_leg(self, conn, leg, legs: list, level: float, at: datetime) -> None:
        side = Side(leg["side"])
        slip = self.slippage_bps / 10_000.0 if leg["kind"] == "stop_loss" else 0.0
        fill = level * (1 + slip) if side is Side.BUY else level * (1 - slip)
        qty = leg["qty"]
        commission = self.commission_per_share * qty
        cash = conn.execute("SELECT cash FROM account WHERE account_id = ?", (self.account_id,)).fetchone()["cash"]
        pos = conn.execute("SELECT qty, avg_entry_price FROM positions WHERE symbol = ?", (leg["symbol"],)).fetchone()
        held, avg = (pos["qty"], pos["avg_entry_price"]) if pos else (0.0, 0.0)
        new_qty = held + qty if side is Side.BUY else held - qty
        new_cash = cash - qty * fill - commission if side is Side.BUY else cash + qty * fill - commission
        conn.execute("UPDATE account SET cash = ? WHERE account_id = ?", (new_cash, self.account_id))
        conn.execute("UPDATE positions SET qty = ?, avg_entry_price = ? WHERE symbol = ?",
                     (new_qty, _average_entry(held, avg, new_qty, fill), leg["symbol"]))
        conn.execute("UPDATE orders SET status = ?, filled_qty = ?, filled_avg_price = ?, commission = ?, "
                     "filled_at = ?, reason = ? WHERE client_order_id = ?",
                     (OrderStatus.FILLED.value, qty, fill, commission, at.isoformat(),
                      f"{leg['kind']} at {level:g}", leg["client_order_id"]))
        for other in legs:
            if other["client_order_id"] != leg["client_order_id"]:
                conn.execute("UPDATE orders SET status = ?, reason = ? WHERE client_order_id = ?",
                             (OrderStatus.CANCELED.value, f"{leg['kind']} filled", other["client_order_id"]))

    def _check_levels(self, request: OrderRequest, price: float) -> None:
        buy = request.side is Side.BUY
        checks = (("take_profit", request.take_profit, buy), ("stop_loss", request.stop_loss, not buy))
        for kind, level, above in checks:
            if level is not None and not (level > price if above else level < price):
                raise OrderRejected(
                    f"{kind} {level:g} is on the wrong side of the price {price:g} for a {request.side.value}",
                    broker=self.name, reason="bracket level on the wrong side of the price")

    def _attach_legs(self, conn, request: OrderRequest) -> None:
        """The entry's working take-profit / stop-loss, active from the tick it filled in."""
        row = conn.execute("SELECT as_of FROM prices WHERE symbol = ?", (request.symbol,)).fetchone()
        active_from = row["as_of"] if row and row["as_of"] else _now().isoformat()
        now = _now()
        for kind, level in (("take_profit", request.take_profit), ("stop_loss", request.stop_loss)):
            if level is None:
                continue
            leg = OrderRequest(client_order_id=bracket_leg_id(request.client_order_id, kind), symbol=request.symbol,
                               side=Side.SELL if request.side is Side.BUY else Side.BUY, qty=request.qty,
                               order_type="limit" if kind == "take_profit" else "stop", limit_price=float(level))
            self._insert_order(conn, leg, OrderStatus.ACCEPTED, 0.0, None, 0.0, now, None, None)
            conn.execute("INSERT INTO bracket_legs (client_order_id, entry_id, symbol, kind, level, active_from) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (leg.client_order_id, request.client_order_id, request.symbol, kind, float(level),
                          active_from))

    @staticmethod
    def _cancel_stranded_legs(conn, symbol: str, new_qty: float, by: str) -> None:
        """Legs protect a position: once another order flattens or reverses it, they go."""
        sides = [side for side, stranded in ((Side.SELL, new_qty <= 1e-12), (Side.BUY, new_qty >= -1e-12)) if stranded]
        for side in sides:
            conn.execute(
                "UPDATE orders SET status = ?, reason = ? WHERE status = ? AND side = ? AND client_order_id IN "
                "(SELECT client_order_id FROM bracket_legs WHERE symbol = ?)",
                (OrderStatus.CANCELED.value, f"position closed by {by}", OrderStatus.ACCEPTED.value, side.value,
                 symbol))

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


def _bracket_hit(long: bool, o: float, h: float, lo: float, tp: float | None,
                 sl: float | None) -> tuple[str, float] | None:
    """(leg, price) a bar fills, by the backtester's rule (core/_backtest_kernels._stop_hit):
    an open beyond a level fills at the open; else the range, the stop first."""
    def beyond(level: float | None, price: float, up: bool) -> bool:
        return level is not None and (price >= level if up else price <= level)

    for kind, level, up in (("stop_loss", sl, not long), ("take_profit", tp, long)):
        if beyond(level, o, up):
            return kind, o
    for kind, level, up, reach in (("stop_loss", sl, not long, h if not long else lo),
                                   ("take_profit", tp, long, h if long else lo)):
        if beyond(level, reach, up):
            return kind, float(level)
    return None


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
