"""Loopback fakes of Alpaca's trading API and market-data API (wire spec section 2).

`FakeAlpaca` keeps an account, positions and orders, fills market orders at prices a
test sets, and applies Alpaca's rules: client order ids are unique (422 40010001 "must be
unique"; `ids_unique_among="open"` for the reading that only open orders count), other
invalid requests are 422 40010001 with their own message (inactive asset, id over 128
characters), buying power and shares held by open orders are not available to the next
order (403 40310000 "insufficient buying power" / "insufficient qty available ...").
It can be scripted to fail the way the real API does: revoked keys (401 without a
`code`), 429 with rate-limit headers, 5xx, a non-JSON gateway page, a 504 or a too-slow
answer *after* the order was stored, rejects.

Fills are immediate by default (inside the POST). Real fills are often not:
`fill_in_steps([1.0])` answers the POST `new` and fills at the next market move
(`set_price`), `fill_in_steps([0.3, 0.3, 0.4])` fills in parts across moves, and
`close_market(now)` keeps Alpaca's hours: a market order placed while closed is held
`accepted` until the first move after the open.

`FakeAlpacaData` serves `/v2/stocks/bars` with page tokens.

The contract suite uses `make_alpaca_under_test()` and these helpers on `FakeAlpaca`:

    set_price(symbol, price)        the market moves: market orders fill at it; open orders
                                    that can fill do (crossed limits, stepped or held fills)
    order_count(client_order_id)    orders the fake holds (order_posts(): POSTs received)
    fill_in_steps(fractions)        later fills, in parts (see above)
    fault_expire_session()          every call 401 until restore_session() (keys are revoked,
                                    they never expire, so the adapter cannot renew them)
    fault_rate_limit(times=1)       next `times` requests 429 (reads are retried by
                                    alpaca-py, the order POST by the adapter after a lookup)
    fault_timeout_after_accept()    order stored, answer sent after the client timed out
    fault_reject_next(reason)       next order POST 403 with Alpaca's message `reason`
    fault_server_error()            next request 500 (after_accept=True: order stored first)
    fault_gateway_timeout_after_accept / _then_rate_limit, fault_reject_in_body,
    fault_garbled_after_accept, fault_non_json: the other ambiguous outcomes
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from trading_assets.core import calendar as nyse
from trading_assets_tests.fakes.base import FakeServer, Request, Response, route

API_KEY = "PKFAKEKEY0000000000"
SECRET_KEY = "fake-secret-never-logged"

_FINAL = {"filled", "canceled", "expired", "rejected", "replaced", "done_for_day"}


def _s(x: float | None) -> str | None:
    """Alpaca's wire format for numbers: strings, integers without a decimal point."""
    if x is None:
        return None
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(round(x, 6))


def _iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"alpaca-asset:{symbol}"))


def _err(status: int, code: int | None, message: str, **headers: str) -> Response:
    body: dict[str, Any] = {"message": message}
    if code is not None:
        body = {"code": code, "message": message}
    return Response(status, body, headers=dict(headers))


class QuickStopServer(FakeServer):
    """`FakeServer` whose `stop()` returns at once instead of after the 0.5 s poll.

    `serve_forever` only notices a shutdown when its select() wakes; a throwaway
    connection wakes it, which keeps a suite of fault tests fast.
    """

    def stop(self) -> None:
        httpd = self._httpd
        if httpd is not None:
            httpd._BaseServer__shutdown_request = True  # type: ignore[attr-defined]
            with suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        super().stop()


class FakeAlpaca(QuickStopServer):
    """Alpaca's trading API (`/v2/...`), stateful, with scriptable faults."""

    def __init__(
        self,
        api_key: str = API_KEY,
        secret_key: str = SECRET_KEY,
        cash: float = 100_000.0,
        margin_multiplier: float = 1.0,
        slow_answer_seconds: float = 2.0,
        ids_unique_among: str = "all",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.secret_key = secret_key
        self.account_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "alpaca-fake-account"))
        self.account_number = "PA3FAKE00001"
        self.cash = float(cash)
        self.margin_multiplier = float(margin_multiplier)
        self.slow_answer_seconds = slow_answer_seconds
        if ids_unique_among not in ("all", "open"):
            raise ValueError(f"ids_unique_among is 'all' or 'open', not {ids_unique_among!r}")
        # "all": a client_order_id stays taken for good, even after its order is closed
        # (what Alpaca is seen doing, alpaca-py issue #260). "open": taken only while its
        # order is open, as some sources describe Alpaca: the worst case for a resend.
        self.ids_unique_among = ids_unique_among
        self.orders: dict[str, dict[str, Any]] = {}  # broker id -> order json
        self.by_client_id: dict[str, str] = {}
        self.positions: dict[str, dict[str, float]] = {}  # symbol -> {qty, avg}
        self.prices: dict[str, float] = {}
        self.inactive_assets: set[str] = set()  # delisted/halted symbols: orders get 422
        self.revoked = False
        self.now: datetime | None = None  # None = the real clock
        # How new orders fill. None: completely inside the POST. A list of fractions of
        # the quantity: nothing inside the POST, then one part per market move (set_price).
        self.fill_steps: list[float] | None = None
        # False: the market is always open. True: Alpaca's hours from `now` and the NYSE
        # calendar; a market order placed while closed is held `accepted` until the open.
        self.market_hours = False
        self._state = threading.RLock()

    # ----------------------------------------------------------------- test helpers
    def set_price(self, symbol: str, price: float) -> None:
        """The market moves: later market orders in `symbol` fill at `price`, and open
        orders fill now if they can (limits that cross it, held or stepped fills)."""
        with self._state:
            self.prices[symbol] = float(price)
            for order in list(self.orders.values()):
                if order["symbol"] == symbol:
                    self._try_fill(order, market_move=True)

    def fill_in_steps(self, fractions: list[float]) -> None:
        """Orders placed from now on answer the POST unfilled (`new`) and fill one part
        at each later market move (`set_price` of their symbol), so a client sees the
        fill only on a later poll: `[1.0]` fills at the next move, `[0.3, 0.3, 0.4]` in
        three partial fills, each at the price of its move."""
        if not fractions or any(f <= 0 for f in fractions):
            raise ValueError(f"fill fractions must be positive, got {fractions!r}")
        self.fill_steps = list(fractions)

    def close_market(self, now: datetime) -> None:
        """Keep Alpaca's market hours with the clock at `now` (set `fake.now` later to
        move it): market orders placed while closed stay `accepted`, unfilled, and fill
        at the first market move (`set_price`) once the market is open."""
        self.now = now
        self.market_hours = True

    def set_position(self, symbol: str, qty: float, avg_entry_price: float) -> None:
        with self._state:
            self.positions[symbol] = {"qty": float(qty), "avg": float(avg_entry_price)}
            self.prices.setdefault(symbol, float(avg_entry_price))

    def order_count(self, client_order_id: str | None = None) -> int:
        """Orders the fake actually holds (all, or those with this client order id)."""
        with self._state:
            if client_order_id is None:
                return len(self.orders)
            return sum(1 for o in self.orders.values() if o["client_order_id"] == client_order_id)

    def order_posts(self) -> int:
        """How many order POSTs reached the server (resends included)."""
        return sum(1 for r in self.requests if r.method == "POST" and r.path == "/v2/orders")

    def fault_expire_session(self) -> None:
        """Revoke the key: every call answers 401 until `restore_session()`."""
        self.revoked = True

    def restore_session(self) -> None:
        self.revoked = False

    def fault_rate_limit(self, times: int = 1) -> None:
        """The next `times` requests answer 429 (reads are retried 3 times by alpaca-py, the
        order POST 3 times by AlpacaBroker after a lookup each)."""
        self.faults.add("rate_limit", times=times)

    def fault_server_error(self, times: int = 1, status: int = 500, after_accept: bool = False) -> None:
        """The next `times` requests answer `status`. With `after_accept`, an order POST
        stores the order first (the outcome the client sees is then ambiguous)."""
        if after_accept:
            self.faults.add(
                "error_after_accept",
                path=r"^/v2/orders$",
                method="POST",
                times=times,
                status=status,
            )
        else:
            self.faults.add("server_error", times=times, status=status)

    def fault_gateway_timeout_after_accept(self) -> None:
        """The next order POST stores the order, then answers 504 (an HTML gateway page)."""
        self.fault_server_error(status=504, after_accept=True)

    def fault_gateway_timeout_then_rate_limit(self, times: int = 3) -> None:
        """The next order POST stores the order and answers 504; the next `times`
        requests (the client's lookups) then get 429."""
        self.faults.add("error_after_accept", path=r"^/v2/orders$", method="POST", status=504, then_rate_limit=times)

    def fault_reject_in_body(self) -> None:
        """The next order POST is stored but answered 200 with `status: rejected`."""
        self.faults.add("reject_in_body", path=r"^/v2/orders$", method="POST")

    def fault_timeout_after_accept(self, delay: float | None = None) -> None:
        """The next order POST stores the order, then answers too slowly for the client."""
        self.faults.add(
            "slow_after_accept",
            path=r"^/v2/orders$",
            method="POST",
            delay=self.slow_answer_seconds if delay is None else delay,
        )

    def fault_garbled_after_accept(self) -> None:
        """The next order POST stores the order, then answers 200 with a non-JSON body."""
        self.faults.add("garbled_after_accept", path=r"^/v2/orders$", method="POST")

    def fault_non_json(self, status: int = 502, path: str | None = None) -> None:
        """The next request (matching `path`) gets an HTML error page from a 'proxy'."""
        self.faults.add("non_json", path=path, status=status)

    def fault_reject_next(self, reason: str = "insufficient buying power") -> None:
        """The next order POST is refused with 403 and Alpaca's message `reason`."""
        self.faults.add("reject", path=r"^/v2/orders$", method="POST", reason=reason)

    # ----------------------------------------------------------------- dispatch
    def dispatch(self, req: Request) -> Response:
        key = req.headers.get("apca-api-key-id")
        secret = req.headers.get("apca-api-secret-key")
        early: Response | None = None
        if self.revoked or key != self.api_key or secret != self.secret_key:
            early = _err(401, None, "unauthorized")
        else:
            fault = self.faults.take(req, kinds=("rate_limit", "server_error", "non_json"))
            if fault is not None and fault.kind == "rate_limit":
                reset = int(self._now().timestamp()) + 60
                early = _err(
                    429,
                    42910000,
                    "rate limit exceeded",
                    **{
                        "X-Ratelimit-Limit": "200",
                        "X-Ratelimit-Remaining": "0",
                        "X-Ratelimit-Reset": str(reset),
                    },
                )
            elif fault is not None and fault.kind == "server_error":
                status = int(fault.params.get("status", 500))
                early = _err(status, 50010000, "internal server error")
            elif fault is not None:
                status = int(fault.params.get("status", 502))
                early = Response(
                    status,
                    f"<html><body><h1>{status} Bad Gateway</h1></body></html>",
                    headers={"Content-Type": "text/html"},
                )
        if early is not None:
            with self.lock:
                self.requests.append(req)
            return early
        return super().dispatch(req)

    def _now(self) -> datetime:
        return self.now or datetime.now(UTC)

    # ----------------------------------------------------------------- account
    def _market_value(self) -> float:
        return sum(p["qty"] * self.prices.get(s, p["avg"]) for s, p in self.positions.items())

    @route("GET", r"/v2/account")
    def get_account(self, req: Request) -> Response:
        with self._state:
            mv = self._market_value()
            long_mv = sum(p["qty"] * self.prices.get(s, p["avg"]) for s, p in self.positions.items() if p["qty"] > 0)
            equity = self.cash + mv
            buying_power = self._buying_power()
            return Response(
                200,
                {
                    "id": self.account_id,
                    "account_number": self.account_number,
                    "status": "ACTIVE",
                    "crypto_status": "ACTIVE",
                    "currency": "USD",
                    "buying_power": _s(buying_power),
                    "regt_buying_power": _s(buying_power),
                    "daytrading_buying_power": "0",
                    "non_marginable_buying_power": _s(max(0.0, max(self.cash, 0.0) - self._held_for_buys())),
                    "cash": _s(self.cash),
                    "accrued_fees": "0",
                    "portfolio_value": _s(equity),
                    "pattern_day_trader": False,
                    "trading_blocked": False,
                    "transfers_blocked": False,
                    "account_blocked": False,
                    "created_at": "2024-01-02T14:30:00.000000Z",
                    "trade_suspended_by_user": False,
                    "multiplier": _s(self.margin_multiplier),
                    "shorting_enabled": True,
                    "equity": _s(equity),
                    "last_equity": _s(equity),
                    "long_market_value": _s(long_mv),
                    "short_market_value": _s(mv - long_mv),
                    "initial_margin": "0",
                    "maintenance_margin": "0",
                    "sma": "0",
                    "daytrade_count": 0,
                },
            )

    def _position_json(self, symbol: str) -> dict[str, Any]:
        p = self.positions[symbol]
        price = self.prices.get(symbol, p["avg"])
        qty = p["qty"]
        cost = qty * p["avg"]
        mv = qty * price
        return {
            "asset_id": _asset_id(symbol),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": _s(p["avg"]),
            "qty": _s(qty),
            "qty_available": _s(self._qty_available(symbol)),
            "side": "long" if qty > 0 else "short",
            "market_value": _s(mv),
            "cost_basis": _s(cost),
            "unrealized_pl": _s(mv - cost),
            "unrealized_plpc": _s((mv - cost) / cost if cost else 0.0),
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": _s(price),
            "lastday_price": _s(price),
            "change_today": "0",
        }

    @route("GET", r"/v2/positions")
    def list_positions(self, req: Request) -> Response:
        with self._state:
            return Response(200, [self._position_json(s) for s in sorted(self.positions)])

    @route("GET", r"/v2/positions/(?P<symbol>[^/]+)")
    def get_position(self, req: Request, symbol: str) -> Response:
        with self._state:
            if symbol not in self.positions:
                return _err(404, 40410000, "position does not exist")
            return Response(200, self._position_json(symbol))

    # ----------------------------------------------------------------- orders
    def _order_json(self, o: dict[str, Any]) -> dict[str, Any]:
        legs = [self._order_json(self.orders[i]) for i in o.get("leg_ids", [])] or None
        return {
            "id": o["id"],
            "client_order_id": o["client_order_id"],
            "created_at": _iso(o["created_at"]),
            "updated_at": _iso(o["updated_at"]),
            "submitted_at": _iso(o["created_at"]),
            "filled_at": _iso(o.get("filled_at")),
            "expired_at": None,
            "canceled_at": _iso(o.get("canceled_at")),
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": _asset_id(o["symbol"]),
            "symbol": o["symbol"],
            "asset_class": "us_equity",
            "notional": None,
            "qty": _s(o["qty"]),
            "filled_qty": _s(o["filled_qty"]),
            "filled_avg_price": _s(o.get("filled_avg_price")),
            "order_class": o["order_class"],
            "order_type": o["type"],
            "type": o["type"],
            "side": o["side"],
            "position_intent": None,
            "time_in_force": o["time_in_force"],
            "limit_price": _s(o.get("limit_price")),
            "stop_price": _s(o.get("stop_price")),
            "status": o["status"],
            "extended_hours": False,
            "legs": legs,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }

    def _validate(self, body: Any) -> Response | None:
        if not isinstance(body, dict):
            return _err(422, 42210000, "request body format is invalid")
        for k in ("symbol", "side", "type", "time_in_force"):
            if not body.get(k):
                return _err(422, 42210000, f"{k} is required")
        if body["side"] not in ("buy", "sell"):
            return _err(422, 42210000, "invalid side")
        if body["type"] not in ("market", "limit", "stop"):
            return _err(422, 42210000, f"invalid order type {body['type']}")
        if body["time_in_force"] not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
            return _err(422, 42210000, "invalid time_in_force")
        try:
            qty = float(body.get("qty"))
        except (TypeError, ValueError):
            return _err(422, 42210000, "qty is required")
        if qty <= 0:
            return _err(422, 40010000, "qty must be > 0")
        if body["type"] == "limit" and body.get("limit_price") is None:
            return _err(422, 42210000, "limit_price is required for limit orders")
        if body["type"] == "stop" and body.get("stop_price") is None:
            return _err(422, 42210000, "stop_price is required for stop orders")
        if body.get("order_class") == "bracket":
            tp, sl = body.get("take_profit") or {}, body.get("stop_loss") or {}
            if tp.get("limit_price") is None or sl.get("stop_price") is None:
                return _err(422, 42210000, "bracket orders require take_profit and stop_loss")
        return None

    def _new_order(self, body: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
        now = self._now()
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": now,
            "updated_at": now,
            "symbol": body["symbol"],
            "side": body["side"],
            "type": body["type"],
            "time_in_force": body["time_in_force"],
            "qty": float(body["qty"]),
            "filled_qty": 0.0,
            "filled_avg_price": None,
            "limit_price": None if body.get("limit_price") is None else float(body["limit_price"]),
            "stop_price": None if body.get("stop_price") is None else float(body["stop_price"]),
            "order_class": body.get("order_class") or ("simple" if parent is None else ""),
            "status": "accepted",
            "parent": parent,
            "leg_ids": [],
            "steps": None if parent is not None or self.fill_steps is None else list(self.fill_steps),
        }
        self.orders[order["id"]] = order
        self.by_client_id[order["client_order_id"]] = order["id"]
        return order

    def _id_taken(self, client_order_id: str) -> bool:
        oid = self.by_client_id.get(client_order_id)
        if oid is None:
            return False
        return self.ids_unique_among == "all" or self.orders[oid]["status"] not in _FINAL

    def _held(self, symbol: str) -> float:
        return self.positions.get(symbol, {}).get("qty", 0.0)

    def _open_orders(self) -> list[dict[str, Any]]:
        """Orders that hold buying power or shares: open and live (bracket legs count once
        their entry has filled; a `held` leg waits for it)."""
        return [o for o in self.orders.values() if o["status"] not in _FINAL and o["status"] != "held"]

    def _price_basis(self, order: dict[str, Any]) -> float:
        return order.get("limit_price") or order.get("stop_price") or self.prices.get(order["symbol"]) or 0.0

    def _held_for_buys(self) -> float:
        """Buying power Alpaca holds for open buy orders (their unfilled part)."""
        return sum(
            (o["qty"] - o["filled_qty"]) * self._price_basis(o) for o in self._open_orders() if o["side"] == "buy"
        )

    def _buying_power(self) -> float:
        return max(0.0, max(self.cash, 0.0) * self.margin_multiplier - self._held_for_buys())

    def _qty_available(self, symbol: str) -> float:
        """Shares held minus those open sell orders already hold (Alpaca's qty_available)."""
        held = self._held(symbol)
        selling = sum(
            o["qty"] - o["filled_qty"] for o in self._open_orders() if o["symbol"] == symbol and o["side"] == "sell"
        )
        return held - selling if held > 0 else held

    def _check_funds(self, body: dict[str, Any]) -> Response | None:
        qty = float(body["qty"])
        symbol = body["symbol"]
        if body["side"] == "buy":
            price = self.prices.get(symbol) or float(body.get("limit_price") or 0.0)
            cost = qty * price
            buying_power = self._buying_power()
            if cost > buying_power + 1e-9:
                return Response(
                    403,
                    {
                        "code": 40310000,
                        "message": "insufficient buying power",
                        "buying_power": _s(buying_power),
                        "cost_basis": _s(cost),
                    },
                )
        elif self._held(symbol) > 0:
            available = self._qty_available(symbol)
            if qty > available + 1e-9:
                return _err(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {_s(qty)}, available: {_s(available)})",
                )
        return None

    def _market_open(self) -> bool:
        if not self.market_hours:
            return True
        now = pd.Timestamp(self._now()).tz_convert(nyse.TZ)
        return any(o <= now < c for o, c in map(nyse.session_open_close, nyse.sessions_between(now.date(), now.date())))

    def _try_fill(self, order: dict[str, Any], market_move: bool = False) -> None:
        """Fill what the market allows now: all of it, or (with fill steps, and only on
        a market move) the next part."""
        if order["parent"] is not None or order["status"] in _FINAL:
            return  # bracket legs wait (the fake does not trigger them)
        if order["steps"] is not None and not market_move:
            return
        if not self._market_open():
            return
        price = self.prices.get(order["symbol"])
        if price is None:
            return
        if order["type"] == "limit":
            lim = order["limit_price"]
            if (order["side"] == "buy" and price > lim) or (order["side"] == "sell" and price < lim):
                return
        if order["type"] == "stop":
            stop = order["stop_price"]
            if (order["side"] == "buy" and price < stop) or (order["side"] == "sell" and price > stop):
                return
        remaining = order["qty"] - order["filled_qty"]
        if order["steps"]:
            part = order["steps"].pop(0) * order["qty"]
            qty = remaining if not order["steps"] else min(remaining, part)
        else:
            qty = remaining
        self._execute(order, qty, price)

    def _execute(self, order: dict[str, Any], qty: float, price: float) -> None:
        """One execution of `qty` at `price`: positions, cash and the order's fill."""
        signed = qty if order["side"] == "buy" else -qty
        pos = self.positions.get(order["symbol"], {"qty": 0.0, "avg": 0.0})
        new_qty = pos["qty"] + signed
        if abs(new_qty) < 1e-12:
            self.positions.pop(order["symbol"], None)
        else:
            same_dir = pos["qty"] == 0 or (pos["qty"] > 0) == (signed > 0)
            if same_dir:
                avg = (abs(pos["qty"]) * pos["avg"] + qty * price) / abs(new_qty)
            elif (new_qty > 0) == (pos["qty"] > 0):
                avg = pos["avg"]
            else:
                avg = price
            self.positions[order["symbol"]] = {"qty": new_qty, "avg": avg}
        self.cash -= signed * price
        now = self._now()
        before = order["filled_qty"]
        filled = before + qty
        avg_price = ((order["filled_avg_price"] or 0.0) * before + price * qty) / filled
        done = filled >= order["qty"] - 1e-12
        order.update(
            status="filled" if done else "partially_filled",
            filled_qty=filled,
            filled_avg_price=avg_price,
            filled_at=now if done else None,
            updated_at=now,
        )
        if done:
            for leg_id in order["leg_ids"]:
                self.orders[leg_id]["status"] = "new"

    @route("POST", r"/v2/orders")
    def post_order(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return _err(400, 40010000, "request body format is invalid")
        invalid = self._validate(body)
        if invalid is not None:
            return invalid
        with self._state:
            cid = body.get("client_order_id")
            # Alpaca answers all three with 40010001; only the message tells them apart.
            if cid and len(cid) > 128:
                return _err(422, 40010001, "client_order_id must be no more than 128 characters")
            if body["symbol"] in self.inactive_assets:
                return _err(422, 40010001, f'asset "{body["symbol"]}" is not active')
            if cid and self._id_taken(cid):
                return _err(422, 40010001, "client_order_id must be unique")
            reject = self.faults.take(req, kinds=("reject",))
            if reject is not None:
                return _err(403, 40310000, str(reject.params.get("reason") or "order rejected"))
            short = self._check_funds(body)
            if short is not None:
                return short
            after = self.faults.take(
                req, kinds=("error_after_accept", "slow_after_accept", "garbled_after_accept", "reject_in_body")
            )
            order = self._new_order(body)
            if after is not None and after.kind == "reject_in_body":
                order["status"] = "rejected"
                return Response(200, self._order_json(order))
            if body.get("order_class") == "bracket":
                exit_side = "sell" if body["side"] == "buy" else "buy"
                tp = self._new_order(
                    {
                        "symbol": body["symbol"],
                        "side": exit_side,
                        "type": "limit",
                        "time_in_force": body["time_in_force"],
                        "qty": body["qty"],
                        "limit_price": body["take_profit"]["limit_price"],
                    },
                    parent=order["id"],
                )
                sl = self._new_order(
                    {
                        "symbol": body["symbol"],
                        "side": exit_side,
                        "type": "stop",
                        "time_in_force": body["time_in_force"],
                        "qty": body["qty"],
                        "stop_price": body["stop_loss"]["stop_price"],
                    },
                    parent=order["id"],
                )
                for leg in (tp, sl):
                    leg["status"] = "held"
                order["leg_ids"] = [tp["id"], sl["id"]]
            if not self._market_open():
                order["status"] = "accepted"  # held until the open
            elif order["steps"] is not None:
                order["status"] = "new"  # routed; fills arrive later
            self._try_fill(order)
            answer = self._order_json(order)
        if after is None:
            return Response(200, answer)
        if after.kind == "error_after_accept":
            status = int(after.params.get("status", 500))
            if after.params.get("then_rate_limit"):
                self.fault_rate_limit(times=int(after.params["then_rate_limit"]))
            if status == 504:
                return Response(
                    504,
                    "<html><body><h1>504 Gateway Time-out</h1></body></html>",
                    headers={"Content-Type": "text/html"},
                )
            return _err(status, 50010000, "internal server error")
        if after.kind == "garbled_after_accept":
            return Response(200, b"<html>upstream reset</html>", headers={"Content-Type": "text/html"})
        return Response(200, answer, delay=float(after.params["delay"]))

    @route("GET", r"/v2/orders")
    def list_orders(self, req: Request) -> Response:
        status = req.query.get("status", "open")
        with self._state:
            out = []
            for o in self.orders.values():
                if o["parent"] is not None:
                    continue
                is_open = o["status"] not in _FINAL
                if status == "all" or (status == "open") == is_open:
                    out.append(self._order_json(o))
            return Response(200, out)

    @route("GET", r"/v2/orders:by_client_order_id")
    def get_by_client_id(self, req: Request) -> Response:
        cid = req.query.get("client_order_id", "")
        with self._state:
            oid = self.by_client_id.get(cid)
            if oid is None:
                return _err(404, 40410000, f"order not found for {cid}")
            return Response(200, self._order_json(self.orders[oid]))

    @route("GET", r"/v2/orders/(?P<order_id>[0-9a-f-]+)")
    def get_order(self, req: Request, order_id: str) -> Response:
        with self._state:
            if order_id not in self.orders:
                return _err(404, 40410000, "order not found")
            return Response(200, self._order_json(self.orders[order_id]))

    def _cancel(self, order: dict[str, Any]) -> None:
        now = self._now()
        order.update(status="canceled", canceled_at=now, updated_at=now)
        for leg_id in order["leg_ids"]:
            leg = self.orders[leg_id]
            if leg["status"] not in _FINAL:
                leg.update(status="canceled", canceled_at=now, updated_at=now)

    @route("DELETE", r"/v2/orders/(?P<order_id>[0-9a-f-]+)")
    def cancel_order(self, req: Request, order_id: str) -> Response:
        with self._state:
            order = self.orders.get(order_id)
            if order is None:
                return _err(404, 40410000, "order not found")
            if order["status"] in _FINAL:
                return _err(422, 42210000, f"order is not cancelable (status: {order['status']})")
            self._cancel(order)
            return Response(204, None)

    def _close(self, symbol: str, qty: float | None = None) -> dict[str, Any]:
        held = self._held(symbol)
        qty = abs(held) if qty is None else qty
        body = {
            "symbol": symbol,
            "side": "sell" if held > 0 else "buy",
            "type": "market",
            "time_in_force": "day",
            "qty": qty,
        }
        order = self._new_order(body)
        self._try_fill(order)
        return order

    @route("DELETE", r"/v2/positions/(?P<symbol>[^/]+)")
    def close_position(self, req: Request, symbol: str) -> Response:
        with self._state:
            if symbol not in self.positions:
                return _err(404, 40410000, "position does not exist")
            held = abs(self._held(symbol))
            qty = held
            if "qty" in req.query:
                qty = float(req.query["qty"])
            elif "percentage" in req.query:
                qty = held * float(req.query["percentage"]) / 100.0
            if qty > held + 1e-9:
                return _err(
                    403,
                    40310000,
                    f"insufficient qty available for order (requested: {_s(qty)}, available: {_s(held)})",
                )
            return Response(200, self._order_json(self._close(symbol, qty)))

    @route("DELETE", r"/v2/positions")
    def close_all_positions(self, req: Request) -> Response:
        cancel = req.query.get("cancel_orders", "false").lower() == "true"
        with self._state:
            if cancel:
                for o in self.orders.values():
                    if o["status"] not in _FINAL and o["parent"] is None:
                        self._cancel(o)
            out = []
            for symbol in sorted(self.positions):
                order = self._close(symbol)
                out.append(
                    {
                        "symbol": symbol,
                        "status": 200,
                        "order_id": order["id"],
                        "body": self._order_json(order),
                    }
                )
            return Response(207, out)

    # ----------------------------------------------------------------- clock & calendar
    @route("GET", r"/v2/clock")
    def clock(self, req: Request) -> Response:
        now = pd.Timestamp(self._now()).tz_convert(nyse.TZ)
        days = nyse.sessions_between(now.date() - timedelta(days=1), now.date() + timedelta(days=10))
        spans = [nyse.session_open_close(d) for d in days]
        is_open = any(o <= now < c for o, c in spans)
        next_open = next(o for o, _ in spans if o > now)
        next_close = next(c for _, c in spans if c > now)
        return Response(
            200,
            {
                "timestamp": now.isoformat(),
                "is_open": is_open,
                "next_open": next_open.isoformat(),
                "next_close": next_close.isoformat(),
            },
        )

    @route("GET", r"/v2/calendar")
    def calendar(self, req: Request) -> Response:
        today = self._now().date()
        start = date.fromisoformat(req.query.get("start", today.isoformat())[:10])
        end = date.fromisoformat(req.query.get("end", (today + timedelta(days=30)).isoformat())[:10])
        out = []
        for d in nyse.sessions_between(start, end):
            o, c = nyse.session_open_close(d)
            out.append(
                {
                    "date": d.isoformat(),
                    "open": o.strftime("%H:%M"),
                    "close": c.strftime("%H:%M"),
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": (d + timedelta(days=1)).isoformat(),
                }
            )
        return Response(200, out)


# ------------------------------------------------------------------------------- market data


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_token(token: str) -> int:
    return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])


class FakeAlpacaData(QuickStopServer):
    """Alpaca's market-data API: `/v2/stocks/bars` with `next_page_token` pagination.

    Bars are stored per (symbol, timeframe) as UTC bar starts. The page size is the
    smaller of the request's `limit` and `page_size`, across all symbols (as Alpaca does).
    """

    def __init__(
        self,
        api_key: str = API_KEY,
        secret_key: str = SECRET_KEY,
        page_size: int = 10_000,
        sip_allowed: bool = False,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.secret_key = secret_key
        self.page_size = page_size
        self.sip_allowed = sip_allowed
        self.bars: dict[tuple[str, str], pd.DataFrame] = {}

    def add_bars(self, symbol: str, timeframe: str, frame: pd.DataFrame) -> None:
        """`frame`: tz-aware index of bar starts, columns open high low close volume."""
        idx = pd.DatetimeIndex(frame.index).tz_convert("UTC")
        self.bars[(symbol, timeframe)] = frame.set_axis(idx).sort_index()

    def bar_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/v2/stocks/bars"]

    def fault_rate_limit(self, times: int = 1) -> None:
        self.faults.add("rate_limit", times=times)

    def fault_non_json(self, status: int = 502) -> None:
        self.faults.add("non_json", status=status)

    def dispatch(self, req: Request) -> Response:
        if (
            req.headers.get("apca-api-key-id") != self.api_key
            or req.headers.get("apca-api-secret-key") != self.secret_key
        ):
            with self.lock:
                self.requests.append(req)
            return _err(401, None, "unauthorized")
        fault = self.faults.take(req)
        if fault is not None:
            with self.lock:
                self.requests.append(req)
            if fault.kind == "rate_limit":
                return _err(429, 42910000, "too many requests")
            status = int(fault.params.get("status", 502))
            return Response(
                status,
                "<html><body>Bad Gateway</body></html>",
                headers={"Content-Type": "text/html"},
            )
        return super().dispatch(req)

    @route("GET", r"/v2/stocks/bars")
    def stock_bars(self, req: Request) -> Response:
        q = req.query
        feed = q.get("feed", "sip")
        if feed == "sip" and not self.sip_allowed:
            return _err(403, None, "subscription does not permit querying recent SIP data")
        symbols = [s for s in q.get("symbols", "").split(",") if s]
        timeframe = q.get("timeframe", "")
        if not symbols or not timeframe:
            return _err(400, 40010000, "symbols and timeframe are required")
        for s in symbols:
            if not s.replace(".", "").replace("/", "").isalnum():
                return _err(400, 40010000, f"invalid symbol: {s}")
        start = pd.Timestamp(q["start"]).tz_convert("UTC") if "start" in q else None
        end = pd.Timestamp(q["end"]).tz_convert("UTC") if "end" in q else None
        rows: list[tuple[str, pd.Timestamp, pd.Series]] = []
        for s in sorted(symbols):
            frame = self.bars.get((s, timeframe))
            if frame is None:
                continue
            if start is not None:
                frame = frame[frame.index >= start]
            if end is not None:
                frame = frame[frame.index <= end]  # Alpaca's end is inclusive
            rows.extend((s, ts, row) for ts, row in frame.iterrows())
        offset = _decode_token(q["page_token"]) if q.get("page_token") else 0
        limit = int(q.get("limit") or 1000)
        size = max(1, min(limit, self.page_size))
        page = rows[offset : offset + size]
        out: dict[str, list[dict[str, Any]]] = {}
        for s, ts, row in page:
            out.setdefault(s, []).append(
                {
                    "t": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "o": float(row["open"]),
                    "h": float(row["high"]),
                    "l": float(row["low"]),
                    "c": float(row["close"]),
                    "v": float(row["volume"]),
                    "n": 100,
                    "vw": float(row["close"]),
                }
            )
        nxt = _encode_token(offset + size) if offset + size < len(rows) else None
        return Response(200, {"bars": out, "next_page_token": nxt})


# ------------------------------------------------------------------------------- factories


@contextmanager
def make_alpaca_under_test(
    cash: float = 100_000.0, timeout: float = 1.0, **fake_kw: Any
) -> Iterator[tuple[Any, FakeAlpaca]]:
    """A started `FakeAlpaca` (`fake_kw` go to it) and an `AlpacaBroker` wired to it.

    alpaca-py's own retry wait is zeroed and the client timeout is short (1 s: generous
    for loopback on a busy machine), so a timeout-after-accept test costs about a second;
    the fake's slow answer comes 2 s after the client has given up.
    """
    from trading_assets.adapters.alpaca.broker import AlpacaBroker

    fake = FakeAlpaca(cash=cash, slow_answer_seconds=timeout + 2.0, **fake_kw)
    fake.start()
    try:
        broker = AlpacaBroker(
            API_KEY,
            SECRET_KEY,
            paper=True,
            url_override=fake.url,
            timeout=timeout,
            rate_limit_per_minute=None,
            retry_wait_seconds=0,
        )
        yield broker, fake
    finally:
        fake.stop()
