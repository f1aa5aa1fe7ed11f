"""Tradovate futures broker over its REST API, with `requests` (Tradovate ships no SDK).

Why it looks the way it does (see `broker-wire-spec.md` section 3):

- **Tokens.** `POST /auth/accesstokenrequest` gives a bearer token with an
  `expirationTime`; we renew with `GET /auth/renewaccesstoken` shortly before it (a
  renewal needs a token that is still valid). On a 401 the server has refused the token,
  so renewing it is pointless (one more of the 10 auth calls a minute, and penalty
  tickets after that): we log in again once and retry. A failed login is HTTP 200 with
  `errorText`; it becomes `SessionExpired` carrying that text, never the password.
- **Errors inside HTTP 200.** `failureReason`/`failureText` on order calls become
  `OrderRejected(reason=...)`; `errorText` elsewhere becomes `BrokerError`. A 400 (or
  other plain 4xx) to an order POST is a reject too, with the server's words: the request
  was refused as sent, and sending it again each tick would only be refused again.
- **Penalty tickets.** HTTP 200 `{p-ticket, p-time, p-captcha}`: wait `p-time` and resend
  the identical body plus `p-ticket`. With `p-captcha` no API client can clear it (about
  an hour), so it is `RateLimited`. 423/429 are lockouts: `RateLimited`, and we stop
  calling until the lockout is over instead of hammering (which extends it).
- **Idempotency.** Tradovate does not deduplicate `clOrdId`. It is stored on the
  `Command` that created an order (the `Order` entity has no such field), so before every
  order POST, and after any ambiguous failure, we look the id up in `/command/list`.
  Found: that order is returned. Not found after a timeout/5xx: `AmbiguousOrderError`;
  the POST is never resent blindly.
- **Close** is an ordinary market order (`/order/placeorder`) for the position's size in
  the opposite direction, carrying our client order id in `clOrdId`, as
  `core.execution.flatten_request` builds it for every broker. `/order/liquidateposition`
  carries no client id, so a close made with it could not be recognised by a rerun in
  another process: the rerun saw "nothing to close", or, after a later entry, sold the
  new position. Found by its id (`/command/list`), a close is never sent twice, in any
  process, whatever the position is now. Like a liquidation, a close first cancels the
  contract's working orders (bracket legs, an unfilled entry), so none is left to open a
  position after it.
- `environment="live"` is real money; `GuardedBroker` refuses orders on it unless live
  trading is switched on explicitly.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

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

BASE_URLS = {
    "demo": "https://demo.tradovateapi.com/v1",
    "live": "https://live.tradovateapi.com/v1",
}
# Published limits: 5000 requests per hour for general calls, 10 per minute for auth.
GENERAL_LIMIT = (5000, 3600.0)
AUTH_LIMIT = (10, 60.0)

_STATUS = {
    "PendingNew": OrderStatus.NEW,
    "Unknown": OrderStatus.NEW,
    "Working": OrderStatus.ACCEPTED,
    "Suspended": OrderStatus.ACCEPTED,  # an OSO bracket waiting for its entry to fill
    "PendingCancel": OrderStatus.ACCEPTED,
    "PendingReplace": OrderStatus.ACCEPTED,
    "Filled": OrderStatus.FILLED,
    "Canceled": OrderStatus.CANCELED,
    "Expired": OrderStatus.EXPIRED,
    "Rejected": OrderStatus.REJECTED,
}
_WORKING = ("PendingNew", "Working", "Suspended", "PendingReplace")  # a close cancels these
_ORDER_TYPES = {"market": "Market", "limit": "Limit", "stop": "Stop", "stop_limit": "StopLimit"}
_TIF = {"day": "Day", "gtc": "GTC", "ioc": "IOC", "fok": "FOK"}


class _TransportError(BrokerError):
    """No usable answer: timeout, dropped connection or 5xx. Ambiguous for order POSTs."""


class _NotFound(BrokerError):
    """404: Tradovate does not know that entity or id."""


class _Refused(BrokerError):
    """Another 4xx (400 malformed request, 403, ...): refused as sent, nothing processed."""


class _Unauthorized(SessionExpired):
    """A 401 on a call we chose not to retry automatically (order POSTs). `token` is the
    bearer the server refused."""

    def __init__(self, message: str, *, token: str | None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.token = token


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class _Login:
    """One Tradovate login, shared by every broker object of a process with the same
    credentials and server. The resources build a broker per step, so a run of three
    broker steps logged in three times, each with its own count of auth calls; a warm alert
    worker running alert after alert passed Tradovate's 10 auth requests a minute, and a
    login over the limit answers a p-captcha ticket (about an hour locked out)."""

    limiter: RateLimiter
    token: str | None = None
    expires_at: datetime | None = None
    locked_until: datetime | None = None
    lock: threading.RLock = field(default_factory=threading.RLock)


_LOGINS: dict[tuple[str, ...], _Login] = {}
_LOGINS_LOCK = threading.Lock()


def _fingerprint(password: str, sec: str) -> str:
    """Keys the shared login by the secrets without keeping them (a changed password is a
    new login, never the old one's token)."""
    return hashlib.sha256(f"{password}\0{sec}".encode()).hexdigest()


def _shared_login(key: tuple[str, ...], limiter: Callable[[], RateLimiter]) -> _Login:
    with _LOGINS_LOCK:
        login = _LOGINS.get(key)
        if login is None:
            login = _LOGINS[key] = _Login(limiter=limiter())
        return login


class TradovateBroker:
    """A Tradovate futures account (demo or live) behind the `Broker` protocol."""

    name = "tradovate"

    def __init__(
        self,
        username: str,
        password: str,
        app_id: str,
        app_version: str,
        cid: int | str,
        sec: str,
        device_id: str | None = None,
        environment: str = "demo",
        base_url: str | None = None,
        account_spec: str | None = None,
        timeout: float = 10.0,
        *,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        rate_limiter: RateLimiter | None = None,
        renew_before: timedelta = timedelta(minutes=10),
        max_penalty_wait: float = 60.0,
        max_penalties: int = 3,
    ) -> None:
        if environment not in BASE_URLS:
            raise ValueError(f"environment must be 'demo' or 'live', not {environment!r}")
        import time

        self.environment = environment
        self.base_url = (base_url or BASE_URLS[environment]).rstrip("/")
        self.account_spec = account_spec
        self.timeout = float(timeout)
        self._username = username
        self._password = password
        self._app_id = app_id
        self._app_version = app_version
        self._cid = int(cid) if str(cid).isdigit() else cid
        self._sec = sec
        self._device_id = device_id
        self._http = session or requests.Session()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sleep = sleep or time.sleep
        stamp = lambda: self._clock().timestamp()  # noqa: E731
        self._limiter = rate_limiter or RateLimiter(*GENERAL_LIMIT, clock=stamp,
                                                    sleep=self._sleep)
        self._auth = _shared_login(  # token, expiry, lockout, auth limit: the process's (see _Login)
            (self.base_url, str(username), str(app_id), str(self._cid), _fingerprint(password, sec)),
            lambda: RateLimiter(*AUTH_LIMIT, clock=stamp, sleep=self._sleep))
        self._renew_before = renew_before
        self._max_penalty_wait = float(max_penalty_wait)
        self._max_penalties = int(max_penalties)
        self._acct: dict[str, Any] | None = None
        self._contract_names: dict[int, str] = {}
        self._contract_ids: dict[str, int] = {}
        self._known: dict[str, int] = {}  # cache of /command/list: client order id -> order id

    @property
    def is_live(self) -> bool:
        """True when this broker trades real money."""
        return self.environment == "live"

    def __repr__(self) -> str:  # never the password or sec
        return (f"TradovateBroker(environment={self.environment!r}, "
                f"base_url={self.base_url!r}, account_spec={self.account_spec!r})")

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()

    # ================================================================ HTTP plumbing
    def _now(self) -> datetime:
        return self._clock()

    def _check_lockout(self) -> None:
        if self._auth.locked_until is not None:
            left = (self._auth.locked_until - self._now()).total_seconds()
            if left > 0:
                raise RateLimited(
                    f"Tradovate locked this client out; not calling again for {left:.0f} s",
                    retry_after=left, broker=self.name)
            self._auth.locked_until = None

    def _lock_out(self, seconds: float) -> None:
        self._auth.locked_until = self._now() + timedelta(seconds=seconds)

    def _send(self, method: str, path: str, *, json: Any = None,
              params: Mapping[str, Any] | None = None, token: str | None = None,
              auth_call: bool = False) -> requests.Response:
        self._check_lockout()
        (self._auth.limiter if auth_call else self._limiter).acquire()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return self._http.request(method, self.base_url + path, json=json, params=params,
                                      headers=headers, timeout=self.timeout)
        except requests.Timeout as exc:
            raise _TransportError(f"Tradovate {method} {path} timed out after "
                                  f"{self.timeout:g} s", broker=self.name) from exc
        except requests.RequestException as exc:
            raise _TransportError(f"Tradovate {method} {path} failed: "
                                  f"{type(exc).__name__}", broker=self.name) from exc

    def _call(self, method: str, path: str, *, json: dict[str, Any] | None = None,
              params: Mapping[str, Any] | None = None, auth: bool = True,
              retry_401: bool = True, token: str | None = None,
              auth_call: bool = False) -> Any:
        """One logical API call: token, lockouts, penalty tickets, 401 renewal, errors
        inside HTTP 200. Returns the decoded JSON body."""
        body = dict(json) if json is not None else None
        penalties = 0
        refreshed = False
        while True:
            bearer = token
            if auth and bearer is None:
                bearer = self._ensure_token()
            resp = self._send(method, path, json=body, params=params, token=bearer,
                              auth_call=auth_call)
            status = resp.status_code
            if status == 401 and auth and token is None:
                if retry_401 and not refreshed:
                    self._login_after_401(bearer)
                    refreshed = True
                    continue
                raise _Unauthorized(f"Tradovate answered 401 to {method} {path}",
                                    token=bearer, broker=self.name)
            if status == 401:
                raise SessionExpired(f"Tradovate answered 401 to {method} {path}",
                                     broker=self.name)
            if status in (423, 429):
                wait = float(resp.headers.get("Retry-After") or 3600.0)
                self._lock_out(wait)
                raise RateLimited(
                    f"Tradovate answered {status} to {method} {path} (rate-limit lockout); "
                    f"pausing calls for {wait:.0f} s", retry_after=wait, broker=self.name)
            if status >= 500:
                raise _TransportError(f"Tradovate answered {status} to {method} {path}",
                                      broker=self.name)
            if status == 404:
                raise _NotFound(f"Tradovate: nothing at {method} {path} {dict(params or {})}",
                                broker=self.name)
            if status >= 400:
                raise _Refused(f"Tradovate answered {status} to {method} {path}: "
                               f"{resp.text[:200]}", broker=self.name, reason=resp.text[:200])
            try:
                data = resp.json()
            except ValueError as exc:
                raise BrokerError(f"Tradovate sent a non-JSON body for {method} {path}",
                                  broker=self.name) from exc
            if isinstance(data, dict) and "p-ticket" in data:
                wait = float(data.get("p-time") or 0.0)
                if data.get("p-captcha"):
                    self._lock_out(3600.0)
                    raise RateLimited(
                        f"Tradovate demands a captcha for {path} (too many requests); an API "
                        "client cannot solve it; wait about an hour or log in once through "
                        "the Tradovate web app", retry_after=3600.0, broker=self.name)
                penalties += 1
                if wait > self._max_penalty_wait or penalties > self._max_penalties:
                    raise RateLimited(f"Tradovate penalty ticket on {path}: wait {wait:g} s",
                                      retry_after=wait, broker=self.name)
                log.info("Tradovate penalty ticket on %s: waiting %.1f s", path, wait)
                self._sleep(wait)
                if json is not None:  # the identical body plus the ticket
                    body = {**json, "p-ticket": data["p-ticket"]}
                continue
            return data

    # ================================================================ session
    def _ensure_token(self) -> str:
        with self._auth.lock:
            now = self._now()
            if self._auth.token is None or self._auth.expires_at is None or now >= self._auth.expires_at:
                self._login()
            elif now >= self._auth.expires_at - self._renew_before:
                try:
                    self._renew()
                except (SessionExpired, BrokerError):
                    self._login()
            assert self._auth.token is not None
            return self._auth.token

    def _login_after_401(self, refused: str | None) -> None:
        """The server refused the token `refused`: log in again. Never renew it first
        (a renewal needs a valid token; with a dead one it is only a wasted auth call).
        If another thread has already replaced that token, use the new one instead."""
        with self._auth.lock:
            if (refused is not None and self._auth.token is not None and self._auth.token != refused
                    and self._auth.expires_at is not None and self._now() < self._auth.expires_at):
                return
            self._auth.token = self._auth.expires_at = None
            self._login()

    def _login(self) -> None:
        body: dict[str, Any] = {
            "name": self._username, "password": self._password, "appId": self._app_id,
            "appVersion": self._app_version, "cid": self._cid, "sec": self._sec,
        }
        if self._device_id:
            body["deviceId"] = self._device_id
        data = self._call("POST", "/auth/accesstokenrequest", json=body, auth=False,
                          auth_call=True)
        self._take_token(data, "login")

    def _renew(self) -> None:
        data = self._call("GET", "/auth/renewaccesstoken", token=self._auth.token, auth_call=True)
        self._take_token(data, "token renewal")

    def _take_token(self, data: Any, what: str) -> None:
        if not isinstance(data, dict) or data.get("errorText") or not data.get("accessToken"):
            text = data.get("errorText") if isinstance(data, dict) else None
            raise SessionExpired(f"Tradovate {what} failed: {text or 'no access token'}",
                                 broker=self.name, reason=text)
        self._auth.token = data["accessToken"]
        self._auth.expires_at = _parse_time(data.get("expirationTime")) or (
            self._now() + timedelta(minutes=80))

    # ================================================================ lookups
    def _account(self) -> dict[str, Any]:
        if self._acct is None:
            accounts = self._call("GET", "/account/list")
            if isinstance(accounts, dict) and accounts.get("errorText"):
                raise BrokerError(f"Tradovate account list: {accounts['errorText']}",
                                  broker=self.name, reason=accounts["errorText"])
            chosen = [a for a in accounts or []
                      if (self.account_spec is None and a.get("active", True))
                      or a.get("name") == self.account_spec]
            if not chosen:
                raise BrokerError(f"Tradovate: no account {self.account_spec or '(active)'} "
                                  "for this user", broker=self.name)
            self._acct = chosen[0]
        return self._acct

    def _contract_name(self, contract_id: int) -> str:
        if contract_id not in self._contract_names:
            c = self._call("GET", "/contract/item", params={"id": contract_id})
            self._remember_contract(c)
        return self._contract_names[contract_id]

    def _contract_id(self, symbol: str) -> int | None:
        if symbol not in self._contract_ids:
            try:
                c = self._call("GET", "/contract/find", params={"name": symbol})
            except _NotFound:
                return None
            if not isinstance(c, dict) or "id" not in c:
                return None
            self._remember_contract(c)
        return self._contract_ids[symbol]

    def _remember_contract(self, c: dict[str, Any]) -> None:
        self._contract_names[int(c["id"])] = c["name"]
        self._contract_ids[c["name"]] = int(c["id"])

    def _find_order_id(self, client_order_id: str) -> int | None:
        if client_order_id in self._known:
            return self._known[client_order_id]
        commands = self._call("GET", "/command/list")
        for c in commands or []:
            if c.get("clOrdId") == client_order_id and c.get("commandType", "New") == "New":
                self._known[client_order_id] = int(c["orderId"])
                return self._known[client_order_id]
        return None

    def _order(self, order_id: int, client_order_id: str) -> Order:
        o = self._call("GET", "/order/item", params={"id": order_id})
        versions = self._call("GET", "/orderVersion/deps", params={"masterid": order_id}) or []
        fills = self._call("GET", "/fill/deps", params={"masterid": order_id}) or []
        qty = float(versions[-1]["orderQty"]) if versions else 0.0
        filled = sum(float(f["qty"]) for f in fills if f.get("active", True))
        avg = (sum(float(f["qty"]) * float(f["price"]) for f in fills if f.get("active", True))
               / filled) if filled else None
        raw = o.get("ordStatus", "Unknown")
        status = _STATUS.get(raw, OrderStatus.NEW)
        if raw == "Completed":
            status = OrderStatus.FILLED if filled else OrderStatus.CANCELED
        elif status is OrderStatus.ACCEPTED and filled:
            status = OrderStatus.PARTIALLY_FILLED
        reason = self._reject_reason(order_id) if status is OrderStatus.REJECTED else None
        return Order(
            client_order_id=client_order_id,
            broker_order_id=str(order_id),
            symbol=self._contract_name(int(o["contractId"])),
            side=Side.BUY if o.get("action") == "Buy" else Side.SELL,
            qty=qty or filled,
            status=status,
            filled_qty=filled,
            filled_avg_price=avg,
            submitted_at=_parse_time(o.get("timestamp")),
            filled_at=_parse_time(fills[-1].get("timestamp")) if fills else None,
            reason=reason,
        )

    def _reject_reason(self, order_id: int) -> str | None:
        """Why an accepted order ended `Rejected`: the command report of its New command."""
        try:
            commands = self._call("GET", "/command/deps", params={"masterid": order_id}) or []
            new = next((c for c in commands if c.get("commandType") == "New"), None)
            if new is None:
                return None
            reports = self._call("GET", "/commandReport/deps",
                                 params={"masterid": new["id"]}) or []
        except BrokerError:
            return None
        for r in reversed(reports):
            words = ": ".join(x for x in (r.get("rejectReason"), r.get("text")) if x)
            if words:
                return words
        return None

    # ================================================================ Broker protocol
    def account(self) -> Account:
        acct = self._account()
        snap = self._call("POST", "/cashBalance/getcashbalancesnapshot",
                          json={"accountId": acct["id"]})
        if snap.get("errorText"):
            raise BrokerError(f"Tradovate cash balance: {snap['errorText']}", broker=self.name,
                              reason=snap["errorText"])
        cash = float(snap.get("totalCashValue") or 0.0)
        net_liq = snap.get("netLiq")
        equity = float(net_liq) if net_liq is not None else cash + float(
            snap.get("openPnL") or 0.0)
        margin = float(snap.get("initialMargin") or 0.0)
        return Account(account_id=str(acct["name"]), cash=cash, equity=equity,
                       buying_power=max(0.0, equity - margin), currency="USD")

    def positions(self) -> list[Position]:
        acct_id = self._account()["id"]
        out = []
        for p in self._call("GET", "/position/list") or []:
            if p.get("accountId") != acct_id or not p.get("netPos"):
                continue  # flat positions stay in Tradovate's list with netPos 0
            out.append(Position(symbol=self._contract_name(int(p["contractId"])),
                                qty=float(p["netPos"]),
                                avg_entry_price=float(p.get("netPrice") or 0.0)))
        return sorted(out, key=lambda p: p.symbol)

    def get_order(self, client_order_id: str) -> Order | None:
        order_id = self._find_order_id(client_order_id)
        return None if order_id is None else self._order(order_id, client_order_id)

    def submit_order(self, request: OrderRequest) -> Order:
        body = self._order_body(request)
        existing = self.get_order(request.client_order_id)
        if existing is not None:
            return existing  # Tradovate would happily place a second one: we don't
        return self._place(request, body)

    def _place(self, request: OrderRequest, body: dict[str, Any]) -> Order:
        """POST an order whose id Tradovate was just checked not to have."""
        has_brackets = request.take_profit is not None or request.stop_loss is not None
        path = "/order/placeoso" if has_brackets else "/order/placeorder"
        try:
            try:
                result = self._call("POST", path, json=body, retry_401=False)
            except _Unauthorized as exc:
                # Refused before processing. Log in, make sure, then send once more.
                self._login_after_401(exc.token)
                existing = self.get_order(request.client_order_id)
                if existing is not None:
                    return existing
                result = self._call("POST", path, json=body, retry_401=False)
        except _TransportError as exc:
            return self._resolve_ambiguous(request.client_order_id, exc)
        except _Refused as exc:  # deterministic: resending the same body gets the same answer
            raise OrderRejected(f"Tradovate refused order {request.client_order_id}: {exc}",
                                broker=self.name, reason=exc.reason) from exc
        self._raise_if_failed(result, request.client_order_id)
        order_id = result.get("orderId") if isinstance(result, dict) else None
        if order_id is None:
            return self._resolve_ambiguous(
                request.client_order_id,
                BrokerError("Tradovate accepted the order POST without an orderId",
                            broker=self.name))
        self._known[request.client_order_id] = int(order_id)
        try:
            order = self._order(int(order_id), request.client_order_id)
        except BrokerError:
            log.warning("Tradovate order %s placed; status read-back failed", order_id)
            return Order(request.client_order_id, str(order_id), request.symbol, request.side,
                         request.qty, OrderStatus.NEW, submitted_at=self._now())
        if order.status is OrderStatus.REJECTED:  # accepted by the API, refused by risk
            raise OrderRejected(
                f"Tradovate rejected order {request.client_order_id}: "
                f"{order.reason or 'Rejected'}", broker=self.name,
                reason=order.reason or "Rejected")
        return order

    def cancel_order(self, client_order_id: str) -> Order | None:
        order_id = self._find_order_id(client_order_id)
        if order_id is None:
            return None
        current = self._order(order_id, client_order_id)
        if current.status.is_final:
            return current
        result = self._call("POST", "/order/cancelorder",
                            json={"orderId": order_id, "isAutomated": True})
        after = self._order(order_id, client_order_id)
        if after.status.is_final:
            return after
        self._raise_if_failed(result, client_order_id)
        return after

    def close_position(self, symbol: str, client_order_id: str) -> Order | None:
        """Flatten `symbol` with a market order carrying *our* client order id.

        The order with this id, if Tradovate has one, is the answer, whatever the position
        is now: a rerun (in any process) never sends a second close, and a rerun of an
        old close never touches a position opened after it. Otherwise the contract's
        working orders are cancelled (as a liquidation does) and the position's size is
        sent the other way. None when there is no such order and nothing is open.
        """
        existing = self.get_order(client_order_id)
        if existing is not None:
            return existing
        request = flatten_request(self.positions(), symbol, client_order_id)
        if request is None:
            return None
        contract_id = self._contract_id(symbol)
        if contract_id is not None and self._cancel_working(self._account()["id"],
                                                            contract_id):
            # Read again: a working order may have filled (in part) before its cancel.
            request = flatten_request(self.positions(), symbol, client_order_id)
            if request is None:
                return None
        return self._place(request, self._order_body(request))

    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        """Tradovate marks its own positions; nothing to do."""
        return None

    # ================================================================ helpers
    def _order_body(self, request: OrderRequest) -> dict[str, Any]:
        if request.qty <= 0 or float(request.qty) != int(request.qty):
            raise OrderRejected(
                f"Tradovate orders are whole contracts; got qty {request.qty}",
                broker=self.name, reason="qty must be a positive whole number of contracts")
        order_type = _ORDER_TYPES.get(request.order_type)
        if order_type is None:
            raise OrderRejected(f"unsupported order type {request.order_type!r}",
                                broker=self.name, reason="unsupported order type")
        acct = self._account()
        body: dict[str, Any] = {
            "accountSpec": acct["name"], "accountId": acct["id"],
            "clOrdId": request.client_order_id,
            "action": "Buy" if request.side is Side.BUY else "Sell",
            "symbol": request.symbol, "orderQty": int(request.qty), "orderType": order_type,
            "timeInForce": _TIF.get(request.time_in_force, "Day"), "isAutomated": True,
        }
        if request.limit_price is not None:
            body["price"] = float(request.limit_price)
        if request.stop_price is not None:
            body["stopPrice"] = float(request.stop_price)
        exit_action = "Sell" if request.side is Side.BUY else "Buy"
        brackets = []
        if request.take_profit is not None:
            brackets.append({"action": exit_action, "orderType": "Limit",
                             "price": float(request.take_profit), "timeInForce": "GTC",
                             "clOrdId": f"{request.client_order_id}-tp"})
        if request.stop_loss is not None:
            brackets.append({"action": exit_action, "orderType": "Stop",
                             "stopPrice": float(request.stop_loss), "timeInForce": "GTC",
                             "clOrdId": f"{request.client_order_id}-sl"})
        for i, bracket in enumerate(brackets, start=1):
            body[f"bracket{i}"] = bracket
        return body

    def _raise_if_failed(self, result: Any, client_order_id: str) -> None:
        if not isinstance(result, dict):
            return
        reason = result.get("failureReason")
        text = result.get("failureText") or result.get("errorText")
        if (reason and reason != "Success") or result.get("errorText"):
            words = ": ".join(x for x in (reason, text) if x)
            raise OrderRejected(f"Tradovate rejected order {client_order_id}: {words}",
                                broker=self.name, reason=words)

    def _resolve_ambiguous(self, client_order_id: str, exc: BrokerError) -> Order:
        try:
            found = self.get_order(client_order_id)
        except BrokerError as lookup_exc:
            raise AmbiguousOrderError(
                f"Tradovate order {client_order_id}: {exc}; lookup failed too "
                f"({lookup_exc}); not resent", broker=self.name) from exc
        if found is not None:
            log.info("Tradovate order %s found after an ambiguous POST", client_order_id)
            return found
        raise AmbiguousOrderError(
            f"Tradovate order {client_order_id}: {exc}; no order with this clOrdId yet; "
            "not resent (look it up again before retrying)", broker=self.name) from exc

    def _cancel_working(self, account_id: int, contract_id: int) -> int:
        """Cancel the working orders on a contract (what a liquidation does first);
        how many there were."""
        working = [o for o in self._call("GET", "/order/list") or []
                   if o.get("accountId") == account_id and o.get("contractId") == contract_id
                   and o.get("ordStatus") in _WORKING]
        for o in working:
            try:
                result = self._call("POST", "/order/cancelorder",
                                    json={"orderId": int(o["id"]), "isAutomated": True})
            except (_NotFound, _Refused) as exc:
                result = {"failureReason": "UnknownReason", "failureText": str(exc)}
            if isinstance(result, dict) and result.get("failureReason") not in (
                    None, "Success", "TooLate"):  # TooLate: it filled; the position says so
                log.warning("Tradovate: could not cancel working order %s before closing: "
                            "%s %s", o["id"], result.get("failureReason"),
                            result.get("failureText") or "")
        return len(working)
