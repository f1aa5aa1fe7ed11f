"""IG (spread bets / CFDs) behind the `Broker` protocol, through the trading-ig library.

Why it looks the way it does (the wire facts are in shared/reference/broker-wire-spec.md §1):

- **Idempotency.** IG lets a client name a deal with `dealReference` (`[A-Za-z0-9_-]{1,30}`),
  but `IGService.create_open_position` cannot send one. We send our own
  `POST /positions/otc` (v2) through the library's request path (same session, headers,
  error mapping) with `dealReference = client_order_id`. Before posting we look the
  reference up (`GET /confirms/{ref}`, then the open positions, which carry their
  `dealReference`), so a rerun returns the deal IG already has instead of placing another.
- **Ambiguity.** A timeout, a 5xx or a garbled 200 on the order POST is resolved by looking
  the reference up: found means placed, not found means `AmbiguousOrderError` (never a
  blind resend).
- **Rejects inside HTTP 200.** IG answers a deal POST with a reference only; the verdict is
  in the confirmation (`dealStatus: REJECTED`, `reason`), which becomes `OrderRejected`.
- **Sessions.** v2 tokens (CST / X-SECURITY-TOKEN) expire (12 h idle, weekend maintenance)
  and the library never logs in again itself; it even raises different exceptions for a
  GET (`TokenInvalidException`) and a POST (`IGException` mentioning client-token-invalid).
  `IGConnection` renews once and retries; for an order POST it re-checks the reference
  before resending.
- **Allowances.** 403 `exceeded-*-allowance` is waited out within a bounded budget
  (injectable sleep), then `RateLimited`. Client-side limiters keep us under IG's published
  limits (trading 100/min, non-trading 30/min per account).
- **Closing** nets: an opposite deal with `forceOpen: false` and our `dealReference`, so a
  close is as idempotent as an open. Orders with a take-profit or stop-loss need
  `forceOpen: true` (IG's rule), so they open a separate deal even against an opposite one.

Symbols are IG epics (e.g. `CS.D.EURUSD.MINI.IP`); qty is the deal size.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests
from trading_ig.rest import (
    D_BASE_URL,
    ApiExceededException,
    IGException,
    IGService,
    KycRequiredException,
    TokenInvalidException,
)
from trading_ig.utils import token_invalid

from trading_assets.adapters.ratelimit import RateLimiter
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

logger = logging.getLogger(__name__)

DEAL_REFERENCE_RE = re.compile(r"[A-Za-z0-9_-]{1,30}")
IG_TRADING_PER_MINUTE = 100  # published per-account trading allowance
IG_NON_TRADING_PER_MINUTE = 30  # published per-account non-trading allowance
_TIF = {"ioc": "EXECUTE_AND_ELIMINATE", "fok": "FILL_OR_KILL"}


class IGTransportError(BrokerError):
    """The request may not have reached IG, or its answer did not reach us (timeout,
    dropped connection, 5xx, a body that is not JSON)."""


class _SessionRenewed(Exception):
    """The token had expired and a new session now exists; the caller decides what to
    re-check before resending."""


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: trading-ig never passes one, and a
    hung order POST must become an ambiguity we can resolve, not a hang."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, **kwargs)


def parse_json(resp: requests.Response, what: str) -> Any:
    """A response's JSON, or a clear `IGTransportError` (IG's edge sometimes answers HTML)."""
    try:
        return json.loads(resp.text)
    except ValueError as exc:
        snippet = resp.text[:80].replace("\n", " ")
        raise IGTransportError(
            f"IG answered {what} with a non-JSON body (HTTP {resp.status_code}): {snippet!r}",
            broker="ig",
        ) from exc


class IGConnection:
    """One IG login shared by the broker, the price history and the stream.

    Logs in lazily (v2), renews an expired session once, paces calls with client-side
    limiters and waits out allowance 403s within `max_rate_limit_wait` seconds.
    """

    def __init__(
        self,
        username: str,
        password: str,
        api_key: str,
        acc_type: str = "demo",
        acc_number: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_rate_limit_wait: float = 20.0,
        trading_limiter: RateLimiter | None = None,
        non_trading_limiter: RateLimiter | None = None,
    ) -> None:
        if acc_type.lower() not in D_BASE_URL:
            raise ValueError(f"acc_type must be one of {sorted(D_BASE_URL)}, got {acc_type!r}")
        self.acc_type = acc_type.lower()
        self.acc_number = acc_number
        self.service = IGService(
            username, password, api_key, acc_type=self.acc_type, acc_number=acc_number,
            session=_TimeoutSession(timeout), return_dataframe=True, return_munch=False,
        )
        if base_url is not None:
            # trading-ig has no base-URL argument; both attributes are read (spec §1).
            self.service.BASE_URL = base_url
            self.service.crud_session.BASE_URL = base_url
        self.sleep = sleep
        self.max_rate_limit_wait = max_rate_limit_wait
        self.trading_limiter = trading_limiter or RateLimiter(IG_TRADING_PER_MINUTE, 60.0)
        self.non_trading_limiter = non_trading_limiter or RateLimiter(
            IG_NON_TRADING_PER_MINUTE, 60.0)
        self.session_info: dict[str, Any] | None = None
        self._lock = threading.RLock()

    @property
    def base_url(self) -> str:
        return self.service.BASE_URL

    # ------------------------------------------------------------------ session
    def login(self) -> dict[str, Any]:
        """Create a fresh v2 session (tokens land in the library's session headers)."""
        with self._lock:
            self.non_trading_limiter.acquire()
            try:
                info = self.service.create_session(version="2")
            except ApiExceededException as exc:
                raise RateLimited("IG login refused: allowance exceeded", broker="ig",
                                  retry_after=60.0) from exc
            except IGException as exc:
                raise SessionExpired(f"IG login failed: {_error_code(str(exc))}",
                                     broker="ig") from exc
            except requests.RequestException as exc:
                raise IGTransportError(f"IG login unreachable: {type(exc).__name__}",
                                       broker="ig") from exc
            except Exception as exc:  # the library raises bare Exception(errorCode)
                raise SessionExpired(f"IG login failed: {exc}", broker="ig") from exc
            current = info.get("currentAccountId")
            if self.acc_number and current != self.acc_number:
                # Orders go to the session's current account: make sure it is ours.
                try:
                    self.service.switch_account(self.acc_number, False)
                except Exception as exc:
                    raise SessionExpired(
                        f"IG could not switch to account {self.acc_number}: "
                        f"{_error_code(str(exc))}", broker="ig") from exc
                info = {**info, "currentAccountId": self.acc_number}
            self.session_info = info
            logger.info("IG session created for account %s", info.get("currentAccountId"))
            return info

    def ensure_session(self) -> dict[str, Any]:
        with self._lock:
            return self.session_info if self.session_info is not None else self.login()

    def account_id(self) -> str:
        info = self.ensure_session()
        return self.acc_number or str(info.get("currentAccountId") or "")

    def currency(self) -> str:
        return str(self.ensure_session().get("currencyIsoCode") or "GBP")

    # ------------------------------------------------------------------ requests
    def request(
        self,
        action: str,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        version: str = "1",
        *,
        trading: bool = False,
        renew: bool = True,
    ) -> requests.Response:
        """One call through trading-ig's request path, with session renewal and pacing.

        `renew=False` raises `_SessionRenewed` after logging in again instead of resending,
        so an order POST can be re-checked first.
        """
        body = dict(params or {})
        return self.run(lambda: self.service._req(action, endpoint, body, None, version),
                        trading=trading, renew=renew)

    def run(self, call: Callable[[], Any], *, trading: bool = False, renew: bool = True) -> Any:
        """Run a library call with the same renewal, pacing and allowance handling."""
        self.ensure_session()
        waited = 0.0
        backoff = 1.0
        renewed = False
        while True:
            (self.trading_limiter if trading else self.non_trading_limiter).acquire()
            try:
                return call()
            except TokenInvalidException:
                expired = True
            except ApiExceededException as exc:
                if waited + backoff > self.max_rate_limit_wait:
                    raise RateLimited(
                        f"IG allowance exceeded; waited {waited:.0f}s, giving up",
                        broker="ig", retry_after=60.0) from exc
                logger.warning("IG allowance exceeded; waiting %.1fs", backoff)
                self.sleep(backoff)
                waited += backoff
                backoff *= 2
                continue
            except IGException as exc:
                text = str(exc)
                if token_invalid(text):
                    expired = True
                elif text.startswith("Server problem"):
                    raise IGTransportError(f"IG {text}", broker="ig") from exc
                else:
                    raise BrokerError(f"IG error: {_error_code(text)}", broker="ig",
                                      reason=_error_code(text)) from exc
            except KycRequiredException as exc:
                raise BrokerError("IG wants its periodic KYC check completed in the web "
                                  "platform before dealing", broker="ig",
                                  reason="error.public-api.failure.kyc.required") from exc
            except requests.RequestException as exc:
                raise IGTransportError(f"IG request failed: {type(exc).__name__}",
                                       broker="ig") from exc
            if expired:
                if renewed:
                    raise SessionExpired("IG session expired again right after renewal",
                                         broker="ig")
                logger.info("IG session token expired; logging in again")
                self.login()
                renewed = True
                if not renew:
                    raise _SessionRenewed()


def _error_code(text: str) -> str:
    """The `errorCode` inside an IG error text, or the text itself."""
    match = re.search(r'"errorCode"\s*:\s*"([^"]+)"', text)
    return match.group(1) if match else text[:200]


def _parse_ig_time(value: Any) -> datetime | None:
    """IG confirmation/position timestamps (UTC fields) as aware datetimes."""
    if not value:
        return None
    text = str(value).replace("/", "-").replace(" ", "T")
    try:
        parsed = datetime.fromisoformat(text[:23] if "T" in text else text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class IGBroker:
    """`Broker` over IG's REST API (see the module docstring for the design)."""

    name = "ig"

    def __init__(
        self,
        username: str,
        password: str,
        api_key: str,
        acc_type: str = "demo",
        acc_number: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        *,
        expiry: str = "-",
        currency_code: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
        confirm_attempts: int = 5,
        confirm_interval: float = 0.5,
        max_rate_limit_wait: float = 20.0,
        connection: IGConnection | None = None,
    ) -> None:
        self.conn = connection or IGConnection(
            username, password, api_key, acc_type, acc_number, base_url, timeout,
            sleep=sleep, max_rate_limit_wait=max_rate_limit_wait,
        )
        self.expiry = expiry
        self.currency_code = currency_code
        self.sleep = sleep
        self.confirm_attempts = max(1, confirm_attempts)
        self.confirm_interval = confirm_interval

    # ------------------------------------------------------------------ reads
    def account(self) -> Account:
        data = parse_json(self.conn.request("read", "/accounts", {}, "1"), "GET /accounts")
        _raise_error_code(data, "GET /accounts")
        wanted = self.conn.account_id()
        accounts = data.get("accounts") or []
        acct = next((a for a in accounts if a.get("accountId") == wanted), None)
        if acct is None:
            acct = next((a for a in accounts if a.get("preferred")), None)
        if acct is None:
            raise BrokerError(f"IG account {wanted!r} not found", broker=self.name)
        bal = acct.get("balance") or {}
        balance = float(bal.get("balance") or 0.0)
        return Account(
            account_id=str(acct["accountId"]),
            cash=balance,
            equity=balance + float(bal.get("profitLoss") or 0.0),
            buying_power=float(bal.get("available") or 0.0),
            currency=str(acct.get("currency") or self.conn.currency()),
        )

    def _open_deals(self) -> list[dict[str, Any]]:
        data = parse_json(self.conn.request("read", "/positions", {}, "2"), "GET /positions")
        _raise_error_code(data, "GET /positions")
        return list(data.get("positions") or [])

    def positions(self) -> list[Position]:
        """Open deals summed per epic; size signed by direction, entry size-weighted."""
        acc: dict[str, list[Any]] = {}  # epic -> [signed size, sum size*level, gross size, mid]
        for item in self._open_deals():
            pos, market = item["position"], item.get("market") or {}
            epic = market.get("epic") or pos.get("epic")
            size = float(pos["size"])
            signed = size if pos["direction"] == "BUY" else -size
            bid, offer = market.get("bid"), market.get("offer")
            mid = (float(bid) + float(offer)) / 2 if bid is not None and offer is not None else None
            slot = acc.setdefault(epic, [0.0, 0.0, 0.0, mid])
            slot[0] += signed
            slot[1] += size * float(pos["level"])
            slot[2] += size
        out = []
        for epic, (qty, notional, gross, mid) in sorted(acc.items()):
            if abs(qty) < 1e-12:
                continue
            out.append(Position(symbol=epic, qty=qty, avg_entry_price=notional / gross,
                                market_price=mid))
        return out

    def _confirm(self, ref: str) -> dict[str, Any] | None:
        resp = self.conn.request("read", f"/confirms/{ref}", {}, "1")
        if resp.status_code == 404:
            return None
        data = parse_json(resp, "GET /confirms")
        _raise_error_code(data, "GET /confirms")
        return data

    def _find(self, ref: str) -> dict[str, Any] | None:
        """What IG knows about `ref`: its confirmation, or (confirmations are short-lived)
        an open deal carrying that reference, shaped like a confirmation."""
        conf = self._confirm(ref)
        if conf is not None:
            return conf
        for item in self._open_deals():
            pos, market = item["position"], item.get("market") or {}
            if pos.get("dealReference") == ref:
                return {
                    "dealReference": ref, "dealId": pos.get("dealId"),
                    "dealStatus": "ACCEPTED", "status": "OPEN", "reason": "SUCCESS",
                    "epic": market.get("epic"), "direction": pos.get("direction"),
                    "size": pos.get("size"), "level": pos.get("level"),
                    "date": pos.get("createdDateUTC"),
                }
        return None

    def _await_confirm(self, ref: str) -> dict[str, Any] | None:
        """Poll the confirmation (IG may need a moment), bounded."""
        for attempt in range(self.confirm_attempts):
            found = self._find(ref) if attempt == self.confirm_attempts - 1 else self._confirm(ref)
            if found is not None:
                return found
            if attempt < self.confirm_attempts - 1:
                self.sleep(self.confirm_interval)
        return None

    def get_order(self, client_order_id: str) -> Order | None:
        if not DEAL_REFERENCE_RE.fullmatch(client_order_id):
            return None  # IG cannot hold a reference like that
        found = self._find(client_order_id)
        return None if found is None else _order_from_confirm(found)

    # ------------------------------------------------------------------ writes
    def submit_order(
        self,
        request: OrderRequest,
        *,
        limit_distance: float | None = None,
        stop_distance: float | None = None,
        guaranteed_stop: bool = False,
    ) -> Order:
        """Open (or net) a deal; idempotent on `client_order_id` (sent as dealReference).

        IG-specific: `limit_distance` / `stop_distance` attach the take-profit / stop-loss
        as distances in points from the fill instead of levels (`take_profit`/`stop_loss`).
        """
        _check_reference(request.client_order_id)
        if request.qty <= 0:
            raise OrderRejected(f"qty must be positive, got {request.qty}", broker=self.name,
                                reason="invalid qty")
        if request.order_type not in ("market", "limit"):
            raise OrderRejected(
                f"IG deals are market or limit (fill-or-reject at a level); "
                f"{request.order_type!r} needs a working order, which this adapter does not place",
                broker=self.name, reason="unsupported order type")
        if request.take_profit is not None and limit_distance is not None:
            raise ValueError("give take_profit (a level) or limit_distance, not both")
        if request.stop_loss is not None and stop_distance is not None:
            raise ValueError("give stop_loss (a level) or stop_distance, not both")
        if request.order_type == "limit" and request.limit_price is None:
            raise ValueError("a limit order needs limit_price")
        attached = any(v is not None for v in (request.take_profit, request.stop_loss,
                                               limit_distance, stop_distance))
        body = {
            "currencyCode": self.currency_code or self.conn.currency(),
            "direction": "BUY" if request.side is Side.BUY else "SELL",
            "epic": request.symbol,
            "expiry": self.expiry,
            # IG requires forceOpen for attached stops/limits; otherwise net like others do.
            "forceOpen": attached,
            "guaranteedStop": guaranteed_stop,
            "level": request.limit_price if request.order_type == "limit" else None,
            "limitDistance": limit_distance,
            "limitLevel": request.take_profit,
            "orderType": "LIMIT" if request.order_type == "limit" else "MARKET",
            "quoteId": None,
            "size": request.qty,
            "stopDistance": stop_distance,
            "stopLevel": request.stop_loss,
            "trailingStop": False,
            "trailingStopIncrement": None,
            "dealReference": request.client_order_id,
        }
        tif = _TIF.get(request.time_in_force.lower())
        if tif:
            body["timeInForce"] = tif
        return self._place(body)

    def _place(self, body: dict[str, Any]) -> Order:
        """Look the reference up, POST once, resolve every unclear outcome by lookup."""
        ref = body["dealReference"]
        existing = self._find(ref)
        if existing is not None:
            logger.info("IG deal %s already exists; not placing it again", ref)
            return _order_or_raise(existing)
        try:
            try:
                resp = self.conn.request("create", "/positions/otc", body, "2",
                                         trading=True, renew=False)
            except _SessionRenewed:
                existing = self._find(ref)
                if existing is not None:
                    return _order_or_raise(existing)
                try:
                    resp = self.conn.request("create", "/positions/otc", body, "2",
                                             trading=True, renew=False)
                except _SessionRenewed as exc:
                    raise SessionExpired("IG session expired again right after renewal",
                                         broker=self.name) from exc
            if resp.status_code != 200:
                data = parse_json(resp, "POST /positions/otc")
                code = data.get("errorCode") if isinstance(data, dict) else None
                raise OrderRejected(f"IG refused deal {ref}: {code or resp.status_code}",
                                    broker=self.name, reason=code or str(resp.status_code))
            data = parse_json(resp, "POST /positions/otc")
            if not isinstance(data, dict) or not data.get("dealReference"):
                raise IGTransportError(f"IG answered POST /positions/otc without a "
                                       f"dealReference: {str(data)[:80]}", broker=self.name)
        except IGTransportError as exc:
            return self._resolve(ref, exc)
        try:
            confirm = self._await_confirm(data["dealReference"])
        except BrokerError as exc:  # accepted, but we cannot see the verdict
            raise AmbiguousOrderError(
                f"IG accepted deal {ref} but looking up its confirmation failed: {exc}",
                broker=self.name, reason="confirmation lookup failed") from exc
        if confirm is None:
            raise AmbiguousOrderError(
                f"IG accepted deal {ref} but no confirmation arrived; look it up later",
                broker=self.name, reason="unconfirmed")
        return _order_or_raise(confirm)

    def _resolve(self, ref: str, cause: Exception) -> Order:
        logger.warning("IG order POST for %s unclear (%s); looking it up", ref, cause)
        try:
            found = self._await_confirm(ref)
        except BrokerError as exc:
            raise AmbiguousOrderError(
                f"IG deal {ref}: POST failed ({cause}) and the lookup failed too ({exc})",
                broker=self.name, reason="lookup failed") from exc
        if found is None:
            raise AmbiguousOrderError(
                f"IG deal {ref}: POST failed ({cause}) and IG has no such deal yet; "
                f"resolve by looking it up, do not resend blindly",
                broker=self.name, reason="not found after failure") from cause
        return _order_or_raise(found)

    def cancel_order(self, client_order_id: str) -> Order | None:
        """IG market and limit deals are final at once, so there is nothing to cancel:
        returns the order as it stands (None if IG never saw it)."""
        return self.get_order(client_order_id)

    def close_position(self, symbol: str, client_order_id: str) -> Order | None:
        """Flatten `symbol` with one netting deal named `client_order_id` (None if flat)."""
        _check_reference(client_order_id)
        existing = self._find(client_order_id)
        if existing is not None:
            return _order_or_raise(existing)
        pos = next((p for p in self.positions() if p.symbol == symbol), None)
        if pos is None or abs(pos.qty) < 1e-12:
            return None
        body = {
            "currencyCode": self.currency_code or self.conn.currency(),
            "direction": "SELL" if pos.qty > 0 else "BUY",
            "epic": symbol, "expiry": self.expiry, "forceOpen": False,
            "guaranteedStop": False, "level": None, "limitDistance": None, "limitLevel": None,
            "orderType": "MARKET", "quoteId": None, "size": abs(pos.qty),
            "stopDistance": None, "stopLevel": None, "trailingStop": False,
            "trailingStopIncrement": None, "dealReference": client_order_id,
        }
        return self._place(body)

    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        """IG prices its own positions."""
        return None


def _check_reference(client_order_id: str) -> None:
    if not DEAL_REFERENCE_RE.fullmatch(client_order_id or ""):
        raise ValueError(
            f"IG dealReference must match [A-Za-z0-9_-]{{1,30}}; got {client_order_id!r}")


def _raise_error_code(data: Any, what: str) -> None:
    if isinstance(data, dict) and "errorCode" in data:
        code = str(data["errorCode"])
        raise BrokerError(f"IG {what}: {code}", broker="ig", reason=code)


def _order_from_confirm(conf: Mapping[str, Any]) -> Order:
    """An IG deal confirmation as a normalised `Order` (IG deals fill or reject at once)."""
    rejected = conf.get("dealStatus") == "REJECTED"
    size = float(conf.get("size") or 0.0)
    when = _parse_ig_time(conf.get("date"))
    reason = conf.get("reason")
    return Order(
        client_order_id=str(conf.get("dealReference")),
        broker_order_id=str(conf.get("dealId") or ""),
        symbol=str(conf.get("epic") or ""),
        side=Side.BUY if conf.get("direction") == "BUY" else Side.SELL,
        qty=size,
        status=OrderStatus.REJECTED if rejected else OrderStatus.FILLED,
        filled_qty=0.0 if rejected else size,
        filled_avg_price=None if rejected or conf.get("level") is None else float(conf["level"]),
        submitted_at=when,
        filled_at=None if rejected else when,
        reason=None if reason in (None, "SUCCESS") else str(reason),
    )


def _order_or_raise(conf: Mapping[str, Any]) -> Order:
    order = _order_from_confirm(conf)
    if order.status is OrderStatus.REJECTED:
        raise OrderRejected(f"IG rejected deal {order.client_order_id}: {order.reason}",
                            broker="ig", reason=order.reason)
    return order
