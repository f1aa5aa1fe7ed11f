"""Alpaca as a `Broker`, through alpaca-py's `TradingClient` (paper by default).

Why this wrapper exists, beyond translating types:

- alpaca-py resends any request that got 429 or 504, order POSTs included. A resent order
  is a second order wherever Alpaca takes the client order id again (some sources say ids
  need only be unique among open orders), so the library's retry is confined to reads
  (GET). The order POST goes out once; a 504, 5xx or timeout is settled by looking the
  order up by its client order id, and a 429 (refused unprocessed) is resent only after
  that lookup found nothing.
- 422 code 40010001 is Alpaca's general invalid-request code: "client_order_id must be
  unique", but also "asset ... is not active", "client_order_id must be no more than 128
  characters" and more. Only the duplicate message means "already placed" (and the lookup
  must then find the order); any other refusal is `OrderRejected` with Alpaca's words, so
  it is recorded as rejected and never resent.
- alpaca-py sets no HTTP timeout and no rate limit. We install a session that applies
  both, so a hung POST becomes an ambiguous outcome we resolve (lookup by client order
  id) instead of a run that never ends, and so bursts stay under Alpaca's 200/min.
- Alpaca's error bodies are not always JSON with a `code` (401 has only a message, a
  proxy may answer HTML); `APIError.code` would raise on those, so we parse defensively.
- Money and quantities arrive as strings; we convert to floats at the edge.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, OrderSide, TimeInForce
from alpaca.trading.requests import (
    GetCalendarRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from pydantic import ValidationError

from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.core.execution import flatten_request
from trading_assets.core.ports import (
    Account,
    AmbiguousOrderError,
    BrokerError,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    Position,
    RateLimited,
    SessionExpired,
    Side,
)

log = logging.getLogger(__name__)

_NEW_YORK = ZoneInfo("America/New_York")  # Alpaca's calendar times are New York wall clock

# Alpaca's words for a taken client order id. The message decides, never the code: 40010001
# covers every kind of invalid request, and some clients report the duplicate as 42210000.
_DUPLICATE_ID = re.compile(r"client_order_id must be unique", re.IGNORECASE)

# Alpaca's many order states, folded onto ours.
_STATUS = {
    "new": OrderStatus.NEW,
    "pending_new": OrderStatus.NEW,
    "accepted": OrderStatus.ACCEPTED,
    "accepted_for_bidding": OrderStatus.ACCEPTED,
    "held": OrderStatus.ACCEPTED,
    "pending_review": OrderStatus.ACCEPTED,
    "calculated": OrderStatus.ACCEPTED,
    "stopped": OrderStatus.ACCEPTED,
    "suspended": OrderStatus.ACCEPTED,
    "pending_cancel": OrderStatus.ACCEPTED,
    "pending_replace": OrderStatus.ACCEPTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "done_for_day": OrderStatus.EXPIRED,
    "canceled": OrderStatus.CANCELED,
    "replaced": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}


class PacedSession(requests.Session):
    """A requests session with a default timeout and a client-side rate limit.

    Every attempt alpaca-py makes (its own retries of reads included) passes through
    here, so the limiter counts what Alpaca counts.
    """

    def __init__(self, timeout: float, limiter: RateLimiter | None) -> None:
        super().__init__()
        self.timeout = timeout
        self.limiter = limiter

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        if self.limiter is not None:
            self.limiter.acquire()
        return super().request(method, url, *args, **kwargs)


class ReadRetryTradingClient(TradingClient):
    """alpaca-py's `TradingClient` whose built-in 429/504 retry covers reads (GET) only.

    alpaca-py decides per attempt whether to resend (`_one_request(..., retry)` raises its
    `RetryException` only while `retry > 0`); a non-GET attempt is given no retries, so an
    order POST, a cancel or a liquidation is sent once and its error reaches us. Nothing
    is toggled on the shared client, so concurrent calls cannot switch each other's
    retries on or off.
    """

    def _one_request(self, method: str, url: str, opts: dict, retry: int) -> Any:
        return super()._one_request(method, url, opts, retry if method.upper() == "GET" else 0)


def _num(value: Any) -> float | None:
    """Alpaca sends numbers as strings (or null); floats at the edge."""
    if value is None or value == "":
        return None
    return float(value)


def _enum_value(value: Any) -> str:
    return str(getattr(value, "value", value) or "")


def _error_body(err: APIError) -> dict[str, Any]:
    """The error's JSON body, or {"message": raw text} when it is not JSON."""
    raw = str(err)
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        return {"message": raw[:300] or "(empty body)"}
    return body if isinstance(body, dict) else {"message": raw[:300]}


class AlpacaBroker:
    """`Broker` over Alpaca's trading API. Paper unless `paper=False` is passed."""

    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        paper: bool = True,
        url_override: str | None = None,
        timeout: float = 10.0,
        rate_limit_per_minute: int | None = 200,
        limiter: RateLimiter | None = None,
        retry_wait_seconds: float | None = None,
    ) -> None:
        self.paper = paper
        self.client = ReadRetryTradingClient(api_key, secret_key, paper=paper, url_override=url_override)
        if limiter is None and rate_limit_per_minute:
            limiter = RateLimiter(rate_limit_per_minute, 60.0)
        self.limiter = limiter
        self.client._session = PacedSession(timeout, limiter)
        if retry_wait_seconds is not None:
            self.client._retry_wait = retry_wait_seconds

    def __repr__(self) -> str:  # never show the keys
        return f"AlpacaBroker(paper={self.paper})"

    # ------------------------------------------------------------------ errors
    def _translate(self, err: APIError, what: str) -> BrokerError:
        """Map an Alpaca API error onto the typed errors of `core.ports`."""
        status = err.status_code
        body = _error_body(err)
        message = str(body.get("message") or body)
        if status == 401:
            return SessionExpired(
                f"Alpaca refused the API key while trying to {what} (HTTP 401: {message}). "
                "Alpaca keys do not expire: the key was revoked, regenerated or belongs to the "
                "other environment (paper vs live).",
                broker=self.name,
                reason=message,
            )
        if status == 429:
            retry_after = None
            if err.response is not None:  # Alpaca sends the reset time as epoch seconds
                reset = _num(err.response.headers.get("X-Ratelimit-Reset"))
                retry_after = None if reset is None else max(0.0, reset - time.time())
            return RateLimited(
                f"Alpaca rate limit while trying to {what}, still 429 after retrying: {message}",
                retry_after=retry_after,
                broker=self.name,
                reason=message,
            )
        return BrokerError(
            f"Alpaca error while trying to {what} (HTTP {status}): {message}",
            broker=self.name,
            reason=message,
        )

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except APIError as err:
            raise self._translate(err, what) from err
        except requests.RequestException as err:
            raise BrokerError(
                f"Alpaca unreachable while trying to {what}: {type(err).__name__}",
                broker=self.name,
            ) from err

    # ------------------------------------------------------------------ account
    def account(self) -> Account:
        acct = self._call("read the account", self.client.get_account)
        return Account(
            account_id=str(acct.account_number or acct.id),
            cash=_num(acct.cash) or 0.0,
            equity=_num(acct.equity) or _num(acct.portfolio_value) or 0.0,
            buying_power=_num(acct.buying_power) or 0.0,
            currency=acct.currency or "USD",
        )

    def positions(self) -> list[Position]:
        raw = self._call("list positions", self.client.get_all_positions)
        out = []
        for p in raw:
            qty = _num(p.qty) or 0.0
            if _enum_value(p.side) == "short" and qty > 0:
                qty = -qty
            out.append(
                Position(
                    symbol=p.symbol,
                    qty=qty,
                    avg_entry_price=_num(p.avg_entry_price) or 0.0,
                    market_price=_num(p.current_price),
                )
            )
        return sorted(out, key=lambda p: p.symbol)

    # ------------------------------------------------------------------ orders
    def _order(self, o: Any) -> Order:
        return Order(
            client_order_id=o.client_order_id,
            broker_order_id=str(o.id),
            symbol=o.symbol or "",
            side=Side(_enum_value(o.side) or "buy"),
            qty=_num(o.qty) or 0.0,
            status=_STATUS.get(_enum_value(o.status), OrderStatus.ACCEPTED),
            filled_qty=_num(o.filled_qty) or 0.0,
            filled_avg_price=_num(o.filled_avg_price),
            commission=0.0,  # Alpaca equities are commission-free
            submitted_at=o.submitted_at,
            filled_at=o.filled_at,
        )

    def _alpaca_request(self, req: OrderRequest) -> Any:
        """Build alpaca-py's request model (raises OrderRejected if it cannot be built)."""
        common: dict[str, Any] = dict(
            symbol=req.symbol,
            qty=req.qty,
            side=OrderSide(Side(req.side).value),
            time_in_force=TimeInForce(req.time_in_force.lower()),
            client_order_id=req.client_order_id,
        )
        if req.take_profit is not None or req.stop_loss is not None:
            if req.take_profit is None or req.stop_loss is None:
                raise OrderRejected(
                    "an Alpaca bracket order needs both take_profit and stop_loss",
                    broker=self.name,
                    reason="incomplete bracket",
                )
            common.update(
                order_class=OrderClass.BRACKET,
                take_profit=TakeProfitRequest(limit_price=req.take_profit),
                stop_loss=StopLossRequest(stop_price=req.stop_loss),
            )
        kind = req.order_type.lower()
        if kind == "market":
            return MarketOrderRequest(**common)
        if kind == "limit":
            return LimitOrderRequest(limit_price=req.limit_price, **common)
        if kind == "stop":
            return StopOrderRequest(stop_price=req.stop_price, **common)
        raise OrderRejected(
            f"unsupported order type {req.order_type!r}",
            broker=self.name,
            reason="unsupported order type",
        )

    def submit_order(self, request: OrderRequest) -> Order:
        """Place an order, exactly once per client order id.

        A duplicate id (ours from an earlier run) returns the existing order. A timeout or
        5xx is resolved by lookup: found means placed; not found raises
        `AmbiguousOrderError` (do not blindly resend). Any other refusal, the other 422
        40010001 validation errors included, is `OrderRejected` with Alpaca's message.
        """
        if request.qty <= 0:
            raise OrderRejected(f"qty must be positive, got {request.qty}", broker=self.name, reason="invalid qty")
        try:
            alpaca_req = self._alpaca_request(request)
        except (ValidationError, ValueError) as err:
            raise OrderRejected(
                f"invalid order {request.client_order_id}: {err}", broker=self.name, reason=str(err)
            ) from err
        cid = request.client_order_id
        order = self._post(request, alpaca_req)
        if order.status is OrderStatus.REJECTED:
            raise OrderRejected(
                f"Alpaca rejected order {cid} ({request.side} {request.qty:g} {request.symbol})",
                broker=self.name,
                reason="rejected",
            )
        return order

    def _post(self, request: OrderRequest, alpaca_req: Any) -> Order:
        """The order POST, sent once per attempt and never resent by alpaca-py.

        Only a 429 (Alpaca refused it unprocessed) leads to another attempt, and only after
        a lookup by client order id found nothing; every other failure is settled.
        """
        cid = request.client_order_id
        retries = max(0, int(self.client._retry))
        attempt = 0
        while True:
            try:
                return self._order(self.client.submit_order(alpaca_req))
            except APIError as err:
                if err.status_code != 429 or attempt >= retries:
                    return self._settle(request, err)
            except (requests.RequestException, ValueError) as err:
                return self._settle(request, err)
            attempt += 1
            log.info("alpaca: order %s refused with 429; looking it up before sending it again", cid)
            time.sleep(self.client._retry_wait)
            found = self.get_order(cid)
            if found is not None:
                return found

    def _settle(self, request: OrderRequest, err: Exception) -> Order:
        """Turn a failed order POST into an order (it was placed) or a typed error."""
        cid = request.client_order_id
        if isinstance(err, (requests.Timeout, requests.ConnectionError)):
            return self._resolve(cid, f"{type(err).__name__} on the order POST")
        if not isinstance(err, APIError):  # a 200 whose body is not JSON / not an order
            return self._resolve(cid, f"unreadable answer to the order POST ({type(err).__name__})")
        status = err.status_code
        body = _error_body(err)
        message = str(body.get("message") or body)
        if status == 422 and _DUPLICATE_ID.search(message):
            log.info("alpaca: client order id %s already placed; returning that order", cid)
            return self._resolve(cid, "Alpaca says the client order id is already taken")
        if status is not None and (status >= 500 or status == 408):
            return self._resolve(cid, f"HTTP {status} on the order POST")
        if status in (400, 403, 404, 422):
            raise OrderRejected(
                f"Alpaca rejected order {cid} ({request.side} {request.qty:g} {request.symbol}): {message}",
                broker=self.name,
                reason=message,
            ) from err
        raise self._translate(err, f"submit order {cid}") from err

    def _resolve(self, client_order_id: str, why: str) -> Order:
        """After an unclear POST outcome, the broker's record decides."""
        try:
            found = self.get_order(client_order_id)
        except BrokerError as err:
            raise AmbiguousOrderError(
                f"order {client_order_id}: {why}, and the lookup failed too ({err}); "
                "its state is unknown: look it up again before resending",
                broker=self.name,
                reason=why,
            ) from err
        if found is None:
            raise AmbiguousOrderError(
                f"order {client_order_id}: {why}, and Alpaca has no order with that id yet; "
                "it may still arrive: look it up again before resending",
                broker=self.name,
                reason=why,
            )
        return found

    def get_order(self, client_order_id: str) -> Order | None:
        try:
            raw = self.client.get_order_by_client_id(client_order_id)
        except APIError as err:
            if err.status_code == 404:
                return None
            raise self._translate(err, f"look up order {client_order_id}") from err
        except requests.RequestException as err:
            raise BrokerError(
                f"Alpaca unreachable while looking up order {client_order_id}: {type(err).__name__}",
                broker=self.name,
            ) from err
        return self._order(raw)

    def cancel_order(self, client_order_id: str) -> Order | None:
        """Cancel if still open; a final order is returned unchanged; None if unknown."""
        order = self.get_order(client_order_id)
        if order is None or order.status.is_final:
            return order
        try:
            self.client.cancel_order_by_id(order.broker_order_id)
        except APIError as err:
            # 422 "order is not cancelable": it filled or was cancelled meanwhile.
            if err.status_code not in (404, 422):
                raise self._translate(err, f"cancel order {client_order_id}") from err
        except requests.RequestException as err:
            raise BrokerError(
                f"Alpaca unreachable while cancelling {client_order_id}: {type(err).__name__}",
                broker=self.name,
            ) from err
        return self.get_order(client_order_id)

    def close_position(self, symbol: str, client_order_id: str) -> Order | None:
        """Flatten `symbol` with an order carrying *our* client order id (idempotent).

        Alpaca's own DELETE /positions/{symbol} cannot carry a client order id, so a
        retried close could not be told apart from a new one; we place the opposite
        order ourselves instead. None when there is nothing to close.
        """
        existing = self.get_order(client_order_id)
        if existing is not None:
            return existing
        request = flatten_request(self.positions(), symbol, client_order_id)
        return None if request is None else self.submit_order(request)

    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        """Alpaca prices its own positions: nothing to do."""
        return None

    # ------------------------------------------------------------------ extras
    def close_all(self, cancel_orders: bool = True) -> list[dict[str, Any]]:
        """Liquidate everything (the kill switch's last resort), one result per symbol.

        Alpaca answers 207 with a per-symbol status; failures are reported, not raised.
        """
        results = self._call("close all positions", self.client.close_all_positions, cancel_orders=cancel_orders)
        out = []
        for item in results:
            body = item.body
            if getattr(body, "client_order_id", None) is not None:
                out.append(
                    {
                        "symbol": item.symbol,
                        "status": item.status,
                        "order": self._order(body),
                        "error": None,
                    }
                )
            else:
                out.append(
                    {
                        "symbol": item.symbol,
                        "status": item.status,
                        "order": None,
                        "error": getattr(body, "message", str(body)),
                    }
                )
        return out

    def clock(self) -> dict[str, Any]:
        """Alpaca's market clock: is_open, next_open, next_close (tz-aware)."""
        c = self._call("read the market clock", self.client.get_clock)
        return {
            "timestamp": c.timestamp,
            "is_open": bool(c.is_open),
            "next_open": c.next_open,
            "next_close": c.next_close,
        }

    def calendar(self, start: date, end: date) -> list[dict[str, Any]]:
        """Trading days in [start, end] with their open and close (New York wall clock)."""
        days = self._call(
            "read the market calendar",
            self.client.get_calendar,
            GetCalendarRequest(start=start, end=end),
        )
        return [
            {
                "date": d.date,
                "open": d.open.replace(tzinfo=_NEW_YORK),
                "close": d.close.replace(tzinfo=_NEW_YORK),
            }
            for d in days
        ]
