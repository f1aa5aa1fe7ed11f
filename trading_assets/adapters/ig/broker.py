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
- **One login per process.** `shared_connection` hands every broker and price history of
  the same login (username, account type and number, server, a sha256 of password and API
  key: never the secrets themselves) the same `IGConnection`: one login, its tokens for
  every call, one renewal on expiry, one pair of rate limiters (IG's limits are per
  account). The resources build a broker per step; each used to log in again.

**Brackets.** A take-profit / stop-loss rides on the entry's deal (`limitLevel` /
`stopLevel`); the tick engine follows them as legs with ids from
`core.execution.bracket_leg_id` (`<entry>:tp`, `<entry>:sl`), which `get_order` resolves:
the entry's deal still open (positions carry its `dealReference`) -> ACCEPTED, the level
in `reason`; else the activity history (`GET /history/activity` v3, detailed, newest
first, from `activity_lookback` ago, paged by following `metadata.paging.next` ourselves:
trading-ig's own pager loses every page after the first) gives the entry's opening (its
dealReference -> dealId, direction, stop and limit levels) and the activity that closed
that dealId. A close by IG itself (channel SYSTEM) at or beyond the limit fills the
take-profit, at or beyond the stop (a stop may slip) the stop-loss: FILLED at the close
level, size and time, the other leg CANCELED. A close by any other deal (our own netting
close, a close in IG's platform) or a SYSTEM close at neither level cancels both. Nothing
found is None (never seen, or IG has not listed it yet). `cancel_order` of a leg is only
a read: IG drops attached orders with their position.

Symbols are IG epics (e.g. `CS.D.EURUSD.MINI.IP`); qty is the deal size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
from trading_assets.core.execution import parse_bracket_leg_id
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
READ_RETRIES = 2  # a read failing in transport is asked again after 0.5 s, then 1 s
READ_BACKOFF_SECONDS = 0.5
_TIF = {"ioc": "EXECUTE_AND_ELIMINATE", "fok": "FILL_OR_KILL"}
ACTIVITY_LOOKBACK = timedelta(days=30)  # how far back a bracket's opening is looked for
ACTIVITY_PAGE_SIZE = 500  # IG's largest activity page
_LEVEL_EPS = 1e-9


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
    limiters and waits out allowance 403s within `max_rate_limit_wait` seconds. Shared
    across threads (see `shared_connection`): calls through `run`/`request` go one at a
    time (trading-ig keeps VERSION and the tokens as sticky headers of one requests
    session; a paged price fetch holds the turn through its pages and page_wait pauses,
    which also keeps the account's pacing), and when several callers see the same expired
    token only the first logs in again.
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
        self.logins = 0  # sessions this connection created (each renewal is one more)
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
            self.logins += 1
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
        so an order POST can be re-checked first. A read that fails in transport (timeout,
        dropped connection, 5xx) is retried `READ_RETRIES` times with backoff; a write never
        is (its outcome is resolved by lookup, never by a blind resend).
        """
        body = dict(params or {})
        attempts = READ_RETRIES + 1 if action == "read" else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                resp = self.run(lambda: self.service._req(action, endpoint, body, None, version),
                                trading=trading, renew=renew)
            except IGTransportError as exc:
                if last:
                    raise
                logger.warning("IG %s %s failed (%s); retrying", action, endpoint, exc)
            else:
                if resp.status_code < 500 or last:
                    return resp
                logger.warning("IG %s %s answered HTTP %s; retrying", action, endpoint, resp.status_code)
            self.sleep(READ_BACKOFF_SECONDS * 2 ** attempt)
        raise AssertionError("unreachable")

    def run(self, call: Callable[[], Any], *, trading: bool = False, renew: bool = True) -> Any:
        """Run a library call with the same renewal, pacing and allowance handling."""
        self.ensure_session()
        waited = 0.0
        backoff = 1.0
        renewed = False
        while True:
            (self.trading_limiter if trading else self.non_trading_limiter).acquire()
            generation = self.logins
            try:
                with self._lock:
                    generation = self.logins  # the session this call is sent with
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
                with self._lock:
                    if self.logins == generation:
                        logger.info("IG session token expired; logging in again")
                        self.login()
                    else:  # another caller of this login renewed it meanwhile
                        logger.info("IG session token expired; already renewed, retrying")
                renewed = True
                if not renew:
                    raise _SessionRenewed()


_CONNECTIONS: dict[tuple[str, ...], IGConnection] = {}
_CONNECTIONS_LOCK = threading.Lock()


def _fingerprint(password: str, api_key: str) -> str:
    """Keys a shared connection by the secrets without keeping them (a changed password or
    key is a new login, never the old one's tokens)."""
    return hashlib.sha256(f"{password}\0{api_key}".encode()).hexdigest()


def shared_connection(
    username: str,
    password: str,
    api_key: str,
    acc_type: str = "demo",
    acc_number: str | None = None,
    base_url: str | None = None,
    timeout: float = 10.0,
) -> IGConnection:
    """The process's `IGConnection` for this login, created on first use (the first
    caller's `timeout` stays). Broker and price history of one login share its session,
    renewal and rate limiters; a different username, account, server, password or API key
    is a different connection."""
    kind = acc_type.lower()
    if kind not in D_BASE_URL:
        raise ValueError(f"acc_type must be one of {sorted(D_BASE_URL)}, got {acc_type!r}")
    key = (str(username), kind, str(acc_number or ""), base_url or D_BASE_URL[kind],
           _fingerprint(str(password), str(api_key)))
    with _CONNECTIONS_LOCK:
        conn = _CONNECTIONS.get(key)
        if conn is None:
            conn = _CONNECTIONS[key] = IGConnection(username, password, api_key, kind,
                                                    acc_number, base_url, timeout)
        return conn


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
        activity_lookback: timedelta = ACTIVITY_LOOKBACK,
        activity_page_size: int = ACTIVITY_PAGE_SIZE,
        activity_max_pages: int = 20,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
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
        self.activity_lookback = activity_lookback
        self.activity_page_size = activity_page_size
        self.activity_max_pages = max(1, activity_max_pages)
        self.clock = clock
        self._closed_brackets: dict[str, dict[str, Any]] = {}  # entry ref -> how it closed

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
        leg = parse_bracket_leg_id(client_order_id)
        if leg is not None:
            return self._bracket_leg(client_order_id, *leg)
        if not DEAL_REFERENCE_RE.fullmatch(client_order_id):
            return None  # IG cannot hold a reference like that
        found = self._find(client_order_id)
        return None if found is None else _order_from_confirm(found)

    # ------------------------------------------------------------------ brackets
    def _bracket_leg(self, leg_id: str, entry: str, kind: str) -> Order | None:
        """An attached take-profit / stop-loss of deal `entry` (module docstring)."""
        if not DEAL_REFERENCE_RE.fullmatch(entry):
            return None
        closed = self._closed_brackets.get(entry)
        if closed is None:
            for item in self._open_deals():
                pos, market = item["position"], item.get("market") or {}
                if pos.get("dealReference") == entry:
                    return _working_leg(leg_id, kind, pos, market.get("epic") or pos.get("epic"))
            closed = self._bracket_history(entry)
            if closed is None:
                return None
            self._closed_brackets[entry] = closed  # a closed deal stays closed
        return _closed_leg(leg_id, kind, closed)

    def _activities(self) -> Iterator[dict[str, Any]]:
        """The account's activities from `activity_lookback` ago, newest first (detailed,
        v3). trading-ig's `fetch_account_activity` copies `from` into `to` when it follows
        `metadata.paging.next`, so it never returns more than the first page: we follow the
        link ourselves, through the connection's request path (renewal, pacing)."""
        since = (self.clock() - self.activity_lookback).astimezone(UTC)
        params: dict[str, Any] = {"from": since.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "detailed": "true", "pageSize": self.activity_page_size}
        for _ in range(self.activity_max_pages):
            resp = self.conn.request("read", "/history/activity", params, "3")
            data = parse_json(resp, "GET /history/activity")
            _raise_error_code(data, "GET /history/activity")
            yield from data.get("activities") or []
            link = ((data.get("metadata") or {}).get("paging") or {}).get("next")
            if not link:
                return
            params = {k: v[-1] for k, v in parse_qs(urlsplit(link).query).items()
                      if k != "version"}
        logger.warning("IG activity history: stopped after %d pages", self.activity_max_pages)

    def _bracket_history(self, entry: str) -> dict[str, Any] | None:
        """How the deal opened as `entry` closed, from the activity history: its opening
        details and the activity that closed it fully; None if either is not listed."""
        closes: list[tuple[dict[str, Any], str]] = []  # (activity, affected deal id), newest first
        opening = None
        for act in self._activities():
            details = act.get("details") or {}
            if act.get("status") != "ACCEPTED":
                continue
            actions = details.get("actions") or []
            for action in actions:
                if action.get("actionType") == "POSITION_CLOSED":
                    closes.append((act, str(action.get("affectedDealId"))))
            if details.get("dealReference") == entry and any(
                    a.get("actionType") == "POSITION_OPENED" for a in actions):
                opening = act
                break  # older pages cannot hold its close
        if opening is None:
            return None
        deal_id = next(str(a.get("affectedDealId")) for a in opening["details"]["actions"]
                       if a.get("actionType") == "POSITION_OPENED")
        close = next((act for act, affected in closes if affected == deal_id), None)
        if close is None:
            return None  # not open and not closed: IG has not listed the close yet
        return {"deal_id": deal_id, "opening": opening, "close": close}

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
        returns the order as it stands (None if IG never saw it). A bracket leg too: its
        attached order goes only with its position, so this is a read."""
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


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _exit_side(direction: Any) -> Side:
    """The side that closes a deal of IG `direction` (a BUY deal's legs sell)."""
    return Side.SELL if direction == "BUY" else Side.BUY


def _working_leg(leg_id: str, kind: str, pos: Mapping[str, Any], epic: Any) -> Order:
    """A leg of a deal that is still open: working if the deal carries its level."""
    level = _float(pos.get("limitLevel") if kind == "take_profit" else pos.get("stopLevel"))
    deal_id = str(pos.get("dealId") or "")
    name = "limit" if kind == "take_profit" else "stop"
    return Order(
        client_order_id=leg_id, broker_order_id=deal_id, symbol=str(epic or ""),
        side=_exit_side(pos.get("direction")), qty=float(pos.get("size") or 0.0),
        status=OrderStatus.ACCEPTED if level is not None else OrderStatus.CANCELED,
        submitted_at=_parse_ig_time(pos.get("createdDateUTC")),
        reason=(f"{kind} working: {name} {level:g} on IG deal {deal_id}" if level is not None
                else f"IG deal {deal_id} has no {name} attached (removed at IG?)"),
    )


def _leg_that_fired(opening: Mapping[str, Any], close: Mapping[str, Any]) -> str | None:
    """Which attached order closed the deal: IG itself closed it (channel SYSTEM) at or
    beyond its limit (take_profit) or its stop (stop_loss: a stop may slip); None for a
    close by another deal, or a SYSTEM close at neither level."""
    if close.get("channel") != "SYSTEM":
        return None
    details, exit_details = opening.get("details") or {}, close.get("details") or {}
    level = _float(exit_details.get("level"))
    if level is None:
        return None
    buy = details.get("direction") == "BUY"
    limit, stop = _float(details.get("limitLevel")), _float(details.get("stopLevel"))
    if limit is not None and (level >= limit - _LEVEL_EPS if buy else level <= limit + _LEVEL_EPS):
        return "take_profit"
    if stop is not None and (level <= stop + _LEVEL_EPS if buy else level >= stop - _LEVEL_EPS):
        return "stop_loss"
    return None


def _closed_leg(leg_id: str, kind: str, closed: Mapping[str, Any]) -> Order:
    """A leg of a deal that is closed: FILLED if this leg closed it, else CANCELED."""
    opening, close = closed["opening"], closed["close"]
    details, exit_details = opening.get("details") or {}, close.get("details") or {}
    fired = _leg_that_fired(opening, close)
    when = _parse_ig_time(close.get("date"))
    level = _float(exit_details.get("level"))
    size = float(exit_details.get("size") or details.get("size") or 0.0)
    common = dict(client_order_id=leg_id, symbol=str(opening.get("epic") or ""),
                  side=_exit_side(details.get("direction")), submitted_at=when)
    if fired == kind:
        return Order(**common, broker_order_id=str(close.get("dealId") or ""), qty=size,
                     status=OrderStatus.FILLED, filled_qty=size, filled_avg_price=level,
                     filled_at=when, reason=f"{kind} triggered at {level:g}")
    if fired is not None:
        why = f"{fired} filled"
    elif close.get("channel") == "SYSTEM":
        why = f"IG closed the deal at {level} (neither its stop nor its limit)"
    else:
        by = exit_details.get("dealReference") or close.get("dealId")
        why = f"position closed by deal {by} ({close.get('channel')})"
    return Order(**common, broker_order_id=str(closed["deal_id"]),
                 qty=float(details.get("size") or 0.0), status=OrderStatus.CANCELED, reason=why)


def _order_or_raise(conf: Mapping[str, Any]) -> Order:
    order = _order_from_confirm(conf)
    if order.status is OrderStatus.REJECTED:
        raise OrderRejected(f"IG rejected deal {order.client_order_id}: {order.reason}",
                            broker="ig", reason=order.reason)
    return order
