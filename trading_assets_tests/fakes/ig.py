"""A loopback fake of IG's REST gateway, faithful to what trading-ig 0.0.25 sends and parses.

Speaks the wire format in `shared/reference/broker-wire-spec.md` section 1: v2 sessions with
CST / X-SECURITY-TOKEN headers, `POST /positions/otc` (v2, with the optional `dealReference`),
DELETE tunnelled as POST + `_method: DELETE`, `GET /confirms/{ref}`, `GET /positions` (v2),
`GET /accounts`, `GET /prices/{epic}` (v3, paged, with the weekly historical allowance),
`GET /history/activity` (v3, as `IGService.fetch_account_activity` sends it).

State: tokens, deals (positions and confirmations, keyed by dealReference), balance, prices,
the account's activity history.
Like IG, the fake does NOT refuse a reused dealReference: it opens a second deal. That is the
worst case a client must survive, so idempotency has to come from the client's own lookup,
and `order_count()` shows whether it did.

Every scripted fault changes what goes over the wire:

    fault_expire_session()         tokens revoked: next call gets 401 client-token-invalid
    fault_rate_limit(times)        403 error.public-api.exceeded-account(-trading)-allowance
    fault_error(status, code)      any other IG error answer (e.g. 403 KYC required)
    fault_timeout_after_accept()   the deal is stored, the answer comes after the client gave up
    fault_reject_next(reason)      HTTP 200 + confirmation dealStatus REJECTED
    fault_server_error(accept)     500 on the next order POST (deal stored or not)
    fault_non_json(accept)         200 with an HTML body on the next order POST
    fault_confirm_lag(times)       GET /confirms answers 404 deal-not-found a few times
    fault_historical_allowance()   403 exceeded-account-historical-data-allowance
    set_market_status(epic, st)    outside TRADEABLE every deal's confirmation is REJECTED
                                   (MARKET_CLOSED_WITH_EDITS, MARKET_CLOSED, MARKET_OFFLINE)
                                   and attached stops/limits do not trigger
    set_dealing_rules(epic, ...)   IG's per-market dealing rules; a deal breaking them is
                                   HTTP 200 + a REJECTED confirmation: size below
                                   min_deal_size -> MINIMUM_ORDER_SIZE_ERROR; a stop or limit
                                   on the wrong side of the price or nearer than
                                   min_stop_distance / min_limit_distance ->
                                   ATTACHED_ORDER_LEVEL_ERROR (defaults: DealingRules())
    set_price / move_market        the market moves: attached stops and limits trigger (below)

IG OTC deals fill or reject at once (no partial or later fill); only the confirmation
may lag (`fault_confirm_lag`).
    page_size / allowance          pagination and the weekly allowance of /prices

Attached stops and limits (`stopLevel`/`limitLevel` or distances on the opening deal) are
watched like IG does: a BUY deal closes when the bid reaches or crosses its stop (at that
bid: a stop is a market order and may slip; a guaranteed stop fills at its level) or its
limit (at the limit level); a SELL deal the same on the offer. The close books the P&L
into the balance, removes the deal and writes a SYSTEM activity with its own dealId and
dealReference (not counted by `order_count`, which counts the client's deals).

Activity history (`GET /history/activity`, VERSION 3): every deal writes one POSITION
activity, dealId = the deal's own id, `details.dealReference` = the reference it was sent
with; `details.actions` say what it did: POSITION_OPENED (affectedDealId = the new
position), POSITION_CLOSED / POSITION_PARTIALLY_CLOSED (affectedDealId = the position it
closed). Client deals are channel PUBLIC_WEB_API, stop/limit triggers SYSTEM; a rejected
deal is status REJECTED with no actions. Query: `from` (inclusive) and `to` (exclusive),
`%Y-%m-%dT%H:%M:%S[.ffffff]` read as UTC; `dealId` (the activity's own or an affected
deal's id: an assumption, IG does not document which); `filter` (a FIQL subset: `==`/`!=`
on top-level fields, `;` and, `,` or); `detailed=true` (else `details` is null);
`pageSize` (default 50). Newest first; `metadata.paging.next` is IG's link for the next
(older) page: the same query with `to` = the oldest listed activity's time (to the
microsecond, so no activity is listed twice or skipped), null on the last page.
trading-ig 0.0.25's own pager copies `from` into `to` when it follows that link (a typo
in `fetch_account_activity`), so through the library only the first page arrives.

Historical bars are deterministic (see `bar_for`), so tests can compute what to expect.
`from`/`to` are read as UK local time, like `snapshotTime`; `snapshotTimeUTC` is UTC.
Stop/limit distances are in price units (IG quotes points; the fake uses scalingFactor 1).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from trading_assets_tests.fakes.base import FakeServer, Request, Response, route

LONDON = ZoneInfo("Europe/London")
PREFIX = "/gateway/deal"

RESOLUTION_SECONDS = {
    "SECOND": 1, "MINUTE": 60, "MINUTE_2": 120, "MINUTE_3": 180, "MINUTE_5": 300,
    "MINUTE_10": 600, "MINUTE_15": 900, "MINUTE_30": 1800, "HOUR": 3600, "HOUR_2": 7200,
    "HOUR_3": 10800, "HOUR_4": 14400, "DAY": 86400, "WEEK": 7 * 86400,
}
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_EXPIRY_RE = re.compile(r"-|DFB|[A-Z]{3}-\d{2}")
_REF_RE = re.compile(r"[A-Za-z0-9_-]{1,30}")
# A deal's confirmation when the market is not TRADEABLE (IG's marketStatus -> reason).
_CLOSED_REASONS = {"EDITS_ONLY": "MARKET_CLOSED_WITH_EDITS", "CLOSED": "MARKET_CLOSED",
                   "OFFLINE": "MARKET_OFFLINE"}
_EPS = 1e-9  # level comparisons: a price "reaches" a level within float noise
API_CHANNEL = "PUBLIC_WEB_API"  # IG's activity channel for deals sent through the REST API
_ACTIVITY_TIME = "%Y-%m-%dT%H:%M:%S"


def _err(status: int, code: str) -> Response:
    return Response(status, {"errorCode": code})


@dataclass
class FakeDeal:
    """One open position (a deal) as IG keeps it."""

    deal_id: str
    deal_reference: str
    epic: str
    expiry: str
    direction: str  # BUY | SELL
    size: float
    level: float
    currency: str
    created: datetime
    limit_level: float | None = None
    stop_level: float | None = None
    guaranteed_stop: bool = False


@dataclass(frozen=True)
class DealingRules:
    """IG's dealing rules of one market, in the fake's units (deal size; price units for
    distances, the fake's scalingFactor being 1). The defaults are EUR/USD-like: a 0.5
    minimum size and 2 pips (0.0002) to the nearest stop or limit."""

    min_deal_size: float = 0.5
    min_stop_distance: float = 0.0002
    min_limit_distance: float = 0.0002


@dataclass
class FakeIGState:
    deals: list[FakeDeal] = field(default_factory=list)  # open positions, oldest first
    confirms: dict[str, dict[str, Any]] = field(default_factory=dict)  # by dealReference
    opened: list[tuple[str, str]] = field(default_factory=list)  # (dealReference, dealId)
    # Activity history, oldest first: (time, IG's detailed activity record).
    activities: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)


class FakeIG(FakeServer):
    """IG REST gateway on 127.0.0.1 (base URL: `fake.base_url`)."""

    def __init__(
        self,
        username: str = "ig-user",
        password: str = "ig-pass",
        api_key: str = "ig-api-key",
        account_id: str = "ABC123",
        currency: str = "GBP",
        balance: float = 10_000.0,
        margin_factor: float = 0.05,
    ) -> None:
        super().__init__()
        self.username, self.password, self.api_key = username, password, api_key
        self.account_id, self.currency = account_id, currency
        self.account_ids = [account_id]  # accounts of this login; account_id is current
        self.balance = balance
        self.margin_factor = margin_factor
        self.state = FakeIGState()
        self.prices: dict[str, tuple[float, float]] = {}  # epic -> (bid, offer)
        self.unknown_epics: set[str] = set()
        self.market_status: dict[str, str] = {}  # epic -> IG marketStatus; TRADEABLE if absent
        self.tokens: set[tuple[str, str]] = set()  # valid (CST, X-SECURITY-TOKEN)
        self.logins = 0
        self.slow_delay = 1.5  # seconds an answer takes under fault_timeout_after_accept
        self.lightstreamer_endpoint = "http://127.0.0.1:1"
        # /prices paging and weekly allowance
        self.total_allowance = 10_000
        self.remaining_allowance = 10_000
        self.allowance_expiry = 3 * 86_400  # seconds until the weekly allowance resets
        self.include_snapshot_utc = True
        self.now = lambda: datetime.now(UTC)
        self.dealing_rules: dict[str, DealingRules] = {}  # epic -> rules; DealingRules() if absent
        self._ids = itertools.count(1)

    def stop(self) -> None:
        """Stop without blocking: `shutdown()` waits up to serve_forever's 0.5 s poll,
        which across a suite of small tests adds up. The port is private to this fake."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            threading.Thread(target=lambda: (httpd.shutdown(), httpd.server_close()),
                             daemon=True).start()

    # ------------------------------------------------------------------ test helpers
    @property
    def base_url(self) -> str:
        return self.url + PREFIX

    def set_price(self, symbol: str, price: float, spread: float = 0.0) -> None:
        """Quote `symbol` (an epic) at mid `price`; bid/offer straddle it by `spread`.
        Attached stops and limits the new quote reaches trigger (module docstring)."""
        with self.lock:
            self.prices[symbol] = (price - spread / 2, price + spread / 2)
            self._trigger_attached(symbol)

    def move_market(self, epic: str, path: Iterable[float], spread: float = 0.0) -> None:
        """Quote `epic` at each mid price of `path` in turn (a market moving tick by tick:
        a stop or limit triggers at the first quote that reaches it)."""
        for price in path:
            self.set_price(epic, price, spread)

    def set_dealing_rules(self, epic: str, *, min_deal_size: float | None = None,
                          min_stop_distance: float | None = None,
                          min_limit_distance: float | None = None) -> DealingRules:
        """IG's dealing rules for `epic` (unset values keep their current/default value)."""
        with self.lock:
            rules = self.rules_for(epic)
            changes = {k: float(v) for k, v in (("min_deal_size", min_deal_size),
                                                 ("min_stop_distance", min_stop_distance),
                                                 ("min_limit_distance", min_limit_distance))
                       if v is not None}
            rules = self.dealing_rules[epic] = DealingRules(**{**rules.__dict__, **changes})
            return rules

    def rules_for(self, epic: str) -> DealingRules:
        return self.dealing_rules.get(epic, DealingRules())

    def activities(self) -> list[dict[str, Any]]:
        """The activity history as IG lists it (detailed), newest first."""
        with self.lock:
            return [dict(a) for _, a in reversed(self.state.activities)]

    def set_market_status(self, epic: str, status: str) -> None:
        """IG's `marketStatus` for `epic`. Outside TRADEABLE every deal (opening or closing)
        is answered HTTP 200 + a reference, and its confirmation is REJECTED with IG's
        reason: EDITS_ONLY -> MARKET_CLOSED_WITH_EDITS, CLOSED -> MARKET_CLOSED,
        OFFLINE -> MARKET_OFFLINE. IG does not queue a market deal for the open."""
        if status != "TRADEABLE" and status not in _CLOSED_REASONS:
            raise ValueError(f"market status {status!r} not modelled; one of {sorted(_CLOSED_REASONS)}")
        with self.lock:
            self.market_status[epic] = status

    def order_count(self, client_order_id: str | None = None) -> int:
        """Deals the fake actually accepted (opening or closing), optionally for one
        dealReference: two for one id means the client placed a duplicate."""
        with self.lock:
            return sum(
                1 for ref, _ in self.state.opened
                if client_order_id is None or ref == client_order_id
            )

    def fault_expire_session(self) -> None:
        """Revoke every token, as IG does at weekend maintenance or after 12 h idle."""
        with self.lock:
            self.tokens.clear()

    def fault_rate_limit(self, times: int = 1,
                         code: str = "error.public-api.exceeded-account-allowance") -> None:
        """The next `times` authenticated requests get 403 with an allowance errorCode."""
        self.faults.add("rate_limit", times=times, code=code)

    def fault_error(self, status: int, code: str, *, path: str | None = None,
                    method: str | None = None, times: int = 1) -> None:
        """Any IG error answer (`{"errorCode": code}` with `status`) on matching requests."""
        self.faults.add("error", path=path, method=method, times=times,
                        status=status, code=code)

    def fault_timeout_after_accept(self) -> None:
        """Accept and store the next deal, then answer after `slow_delay` seconds."""
        self.faults.add("timeout_after_accept", path=r"/positions/otc$", method="POST")

    def fault_reject_next(self, reason: str = "INSUFFICIENT_FUNDS") -> None:
        """The next deal is REJECTED with `reason`, inside an HTTP 200 confirmation."""
        self.faults.add("reject", path=r"/positions/otc$", method="POST", reason=reason)

    def fault_server_error(self, accept: bool = False, times: int = 1) -> None:
        """The next order POST answers 500; with `accept` the deal was stored anyway."""
        self.faults.add("server_error", path=r"/positions/otc$", method="POST",
                        times=times, accept=accept)

    def fault_non_json(self, accept: bool = True) -> None:
        """The next order POST answers 200 with an HTML page instead of JSON."""
        self.faults.add("non_json", path=r"/positions/otc$", method="POST", accept=accept)

    def fault_confirm_lag(self, times: int = 1) -> None:
        """GET /confirms answers 404 deal-not-found `times` times (confirmation not ready)."""
        self.faults.add("confirm_lag", path=r"/confirms/", method="GET", times=times)

    def fault_historical_allowance(self) -> None:
        """Use up the weekly historical-price allowance."""
        with self.lock:
            self.remaining_allowance = 0

    # ------------------------------------------------------------------ dispatch
    def method_of(self, req: Request) -> str:
        if req.method == "POST" and req.headers.get("_method", "").upper() == "DELETE":
            return "DELETE"
        return req.method

    def dispatch(self, req: Request) -> Response:
        if req.headers.get("x-ig-api-key") != self.api_key:
            with self.lock:
                self.requests.append(req)
            return _err(403, "error.security.api-key-invalid")
        path = req.path
        if not path.startswith(PREFIX):
            return super().dispatch(req)
        is_login = path == PREFIX + "/session" and req.method == "POST" and \
            self.method_of(req) == "POST"
        if not is_login and path != PREFIX + "/session/encryptionKey":
            pair = (req.headers.get("cst", ""), req.headers.get("x-security-token", ""))
            with self.lock:
                valid = pair in self.tokens
            if not valid:
                with self.lock:
                    self.requests.append(req)
                return _err(401, "error.security.client-token-invalid")
            fault = self.faults.take(req, kinds=("rate_limit", "error"))
            if fault is not None:
                with self.lock:
                    self.requests.append(req)
                code = fault.params["code"]
                if fault.kind == "error":
                    return _err(fault.params["status"], code)
                if req.method == "POST" and path.endswith("/positions/otc") and \
                        code == "error.public-api.exceeded-account-allowance":
                    code = "error.public-api.exceeded-account-trading-allowance"
                return _err(403, code)
        return super().dispatch(req)

    # ------------------------------------------------------------------ session
    def _session_body(self) -> dict[str, Any]:
        return {
            "accountType": "CFD",
            "accountInfo": self._balance(),
            "currencyIsoCode": self.currency,
            "currencySymbol": "£",
            "currentAccountId": self.account_id,
            "lightstreamerEndpoint": self.lightstreamer_endpoint,
            "accounts": [{"accountId": a, "accountName": "CFD", "preferred": i == 0,
                          "accountType": "CFD"} for i, a in enumerate(self.account_ids)],
            "clientId": "100000001",
            "timezoneOffset": 0,
            "hasActiveDemoAccounts": True,
            "hasActiveLiveAccounts": False,
            "trailingStopsEnabled": False,
            "reroutingEnvironment": None,
            "dealingEnabled": True,
        }

    @route("POST", PREFIX + "/session")
    def create_session(self, req: Request) -> Response:
        body = req.json() or {}
        if body.get("identifier") != self.username or body.get("password") != self.password:
            return _err(401, "error.security.invalid-details")
        if req.headers.get("version") not in ("2", None):
            return _err(400, "fake: only v2 sessions are implemented")
        with self.lock:
            self.account_id = self.account_ids[0]  # a login lands on the default account
            n = next(self._ids)
            tokens = (f"cst-{n}", f"xst-{n}")
            self.tokens.add(tokens)
            self.logins += 1
        return Response(200, self._session_body(),
                        headers={"CST": tokens[0], "X-SECURITY-TOKEN": tokens[1]})

    @route("GET", PREFIX + "/session")
    def read_session(self, req: Request) -> Response:
        return Response(200, {"clientId": "100000001", "accountId": self.account_id,
                              "timezoneOffset": 0, "locale": "en_GB",
                              "currency": self.currency,
                              "lightstreamerEndpoint": self.lightstreamer_endpoint})

    @route("PUT", PREFIX + "/session")
    def switch_account(self, req: Request) -> Response:
        target = (req.json() or {}).get("accountId")
        if target not in self.account_ids:
            return _err(400, "error.switch.accountId-invalid")
        if target == self.account_id:
            return _err(412, "error.switch.accountId-must-be-different")
        with self.lock:
            self.account_id = target
        return Response(200, {"trailingStopsEnabled": False, "dealingEnabled": True,
                              "hasActiveDemoAccounts": True, "hasActiveLiveAccounts": False})

    @route("DELETE", PREFIX + "/session")
    def logout(self, req: Request) -> Response:
        with self.lock:
            pair = (req.headers.get("cst", ""), req.headers.get("x-security-token", ""))
            self.tokens.discard(pair)
        return Response(204, None)

    # ------------------------------------------------------------------ account
    def _pnl(self) -> float:
        total = 0.0
        for d in self.state.deals:
            bid, offer = self.prices.get(d.epic, (d.level, d.level))
            move = bid - d.level if d.direction == "BUY" else d.level - offer
            total += move * d.size
        return total

    def _margin(self) -> float:
        return sum(d.size * d.level * self.margin_factor for d in self.state.deals)

    def _balance(self) -> dict[str, float]:
        with self.lock:
            pnl = self._pnl()
            return {"balance": self.balance, "deposit": self._margin(), "profitLoss": pnl,
                    "available": self.balance + pnl - self._margin()}

    @route("GET", PREFIX + "/accounts")
    def accounts(self, req: Request) -> Response:
        return Response(200, {"accounts": [{
            "accountId": a, "accountName": "CFD", "accountAlias": None,
            "status": "ENABLED", "accountType": "CFD", "preferred": i == 0,
            "balance": self._balance(), "currency": self.currency,
            "canTransferFrom": True, "canTransferTo": True,
        } for i, a in enumerate(self.account_ids)]})

    # ------------------------------------------------------------------ positions
    def _position_json(self, d: FakeDeal) -> dict[str, Any]:
        bid, offer = self.prices.get(d.epic, (d.level, d.level))
        local = d.created.astimezone(LONDON)
        return {
            "position": {
                "contractSize": 1.0,
                "createdDate": local.strftime("%Y/%m/%d %H:%M:%S:000"),
                "createdDateUTC": d.created.strftime("%Y-%m-%dT%H:%M:%S"),
                "dealId": d.deal_id, "dealReference": d.deal_reference, "size": d.size,
                "direction": d.direction, "limitLevel": d.limit_level, "level": d.level,
                "currency": d.currency, "controlledRisk": False, "stopLevel": d.stop_level,
                "trailingStep": None, "trailingStopDistance": None, "limitedRiskPremium": None,
            },
            "market": {
                "instrumentName": d.epic, "expiry": d.expiry, "epic": d.epic,
                "instrumentType": "CURRENCIES", "lotSize": 1.0, "high": offer, "low": bid,
                "percentageChange": 0.0, "netChange": 0.0, "bid": bid, "offer": offer,
                "updateTime": local.strftime("%H:%M:%S"),
                "updateTimeUTC": d.created.strftime("%H:%M:%S"), "delayTime": 0,
                "streamingPricesAvailable": True,
                "marketStatus": self.market_status.get(d.epic, "TRADEABLE"),
                "scalingFactor": 1,
            },
        }

    @route("GET", PREFIX + "/positions")
    def positions(self, req: Request) -> Response:
        with self.lock:
            return Response(200, {"positions": [self._position_json(d) for d in self.state.deals]})

    @route("GET", PREFIX + "/confirms/(?P<ref>[^/]+)")
    def confirm(self, req: Request, ref: str) -> Response:
        if self.faults.take(req, kinds=("confirm_lag",)) is not None:
            return _err(404, "error.confirms.deal-not-found")
        with self.lock:
            conf = self.state.confirms.get(ref)
        if conf is None:
            return _err(404, "error.confirms.deal-not-found")
        return Response(200, conf)

    def _validate_open(self, body: dict[str, Any]) -> str | None:
        """IG's request validation for POST /positions/otc (v2): the errorCode, or None."""
        if not _CURRENCY_RE.fullmatch(str(body.get("currencyCode") or "")):
            return "validation.pattern.invalid.createPositionRequest.currencyCode"
        if not _EXPIRY_RE.fullmatch(str(body.get("expiry") or "")):
            return "validation.pattern.invalid.createPositionRequest.expiry"
        if body.get("direction") not in ("BUY", "SELL"):
            return "validation.null-not-allowed.request.direction"
        order_type = body.get("orderType")
        if order_type not in ("MARKET", "LIMIT", "QUOTE"):
            return "validation.null-not-allowed.request.orderType"
        if order_type == "MARKET" and (body.get("level") is not None or body.get("quoteId")):
            return "error.service.create.position.market.level-or-quote-set"
        if order_type == "LIMIT" and body.get("level") is None:
            return "error.service.create.position.limit.level-missing"
        if body.get("limitLevel") is not None and body.get("limitDistance") is not None:
            return "error.service.create.position.limit.level-and-distance"
        if body.get("stopLevel") is not None and body.get("stopDistance") is not None:
            return "error.service.create.position.stop.level-and-distance"
        attached = any(body.get(k) is not None for k in
                       ("limitLevel", "limitDistance", "stopLevel", "stopDistance"))
        if attached and body.get("forceOpen") is not True:
            return "error.service.create.position.force-open-required"
        tif = body.get("timeInForce")
        if tif is not None and tif not in ("EXECUTE_AND_ELIMINATE", "FILL_OR_KILL"):
            return "validation.invalid.timeInForce"
        size = body.get("size")
        if not isinstance(size, (int, float)) or size <= 0:
            return "validation.null-not-allowed.request.size"
        ref = body.get("dealReference")
        if ref is not None and not _REF_RE.fullmatch(str(ref)):
            return "validation.pattern.invalid.createPositionRequest.dealReference"
        return None

    @route("POST", PREFIX + "/positions/otc")
    def open_position(self, req: Request) -> Response:
        try:
            body = req.json()
        except ValueError:
            return _err(400, "validation.invalid.json")
        if req.headers.get("version") != "2":
            return _err(400, "fake: POST /positions/otc expects VERSION 2")
        problem = self._validate_open(body)
        if problem:
            return _err(400, problem)
        epic = body["epic"]
        if epic in self.unknown_epics or epic not in self.prices:
            return _err(404, "error.service.marketdata.instrument.epic.unavailable")
        for kind in ("server_error", "non_json"):
            fault = self.faults.take(req, kinds=(kind,))
            if fault is not None:
                if fault.params.get("accept"):
                    self._deal(body, None)
                if kind == "server_error":
                    return Response(500, "<html><body>Internal Server Error</body></html>")
                return Response(200, "<html><body>Service temporarily unavailable</body></html>")
        reject = self.faults.take(req, kinds=("reject",))
        ref = self._deal(body, reject.params["reason"] if reject else None)
        slow = self.faults.take(req, kinds=("timeout_after_accept",))
        return Response(200, {"dealReference": ref}, delay=self.slow_delay if slow else 0.0)

    def _deal(self, body: dict[str, Any], reject_reason: str | None, *,
              opening_rules: bool = True) -> str:
        """Execute (or reject) a deal at the current quote; store its confirmation and
        its activity. `opening_rules`: the POST route checks the market's dealing rules
        (a DELETE close of what is open does not)."""
        with self.lock:
            n = next(self._ids)
            ref = body.get("dealReference") or f"REF{n:08d}"
            deal_id = f"DIAAAA{n:08d}"
            now = self.now()
            epic = body["epic"]
            bid, offer = self.prices[epic]
            direction, size = body["direction"], float(body["size"])
            level = offer if direction == "BUY" else bid
            stop, limit = self._attached_levels(body, direction, level)
            conf: dict[str, Any] = {
                "date": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                "status": None, "reason": "SUCCESS", "dealStatus": "ACCEPTED",
                "epic": epic, "expiry": body["expiry"], "dealReference": ref,
                "dealId": deal_id, "affectedDeals": [], "level": level, "size": size,
                "direction": direction, "stopLevel": body.get("stopLevel"),
                "limitLevel": body.get("limitLevel"),
                "stopDistance": body.get("stopDistance"),
                "limitDistance": body.get("limitDistance"),
                "guaranteedStop": bool(body.get("guaranteedStop")),
                "trailingStop": bool(body.get("trailingStop")),
                "profit": None, "profitCurrency": None,
            }
            status = self.market_status.get(epic, "TRADEABLE")
            if status != "TRADEABLE":
                reject_reason = reject_reason or _CLOSED_REASONS[status]
            if body.get("orderType") == "LIMIT":
                worse = level > float(body["level"]) if direction == "BUY" \
                    else level < float(body["level"])
                if worse:
                    reject_reason = reject_reason or "LEVEL_TOLERANCE_ERROR"
            if opening_rules and reject_reason is None:
                reject_reason = self._rule_break(epic, direction, size, stop, limit)
            if reject_reason is None:
                cost = size * level * self.margin_factor
                if cost > self.balance + self._pnl() - self._margin():
                    reject_reason = "INSUFFICIENT_FUNDS"
            if reject_reason is not None:
                conf.update(dealStatus="REJECTED", reason=reject_reason, status=None,
                            dealId=deal_id, level=None, profit=None)
                self.state.confirms[ref] = conf
                self._record_activity(now, deal_id, ref, epic, body["expiry"], API_CHANNEL,
                                      [], direction, size, None, stop, limit, body,
                                      status="REJECTED")
                return ref
            self.state.opened.append((ref, deal_id))
            remaining = size
            profit = 0.0
            closed_any = False
            actions: list[dict[str, Any]] = []
            if not body.get("forceOpen"):  # net against opposite deals, oldest first
                for deal in list(self.state.deals):
                    if remaining <= 1e-12:
                        break
                    if deal.epic != epic or deal.direction == direction:
                        continue
                    take = min(deal.size, remaining)
                    closed_any = True
                    sign = 1 if deal.direction == "BUY" else -1
                    profit += sign * (level - deal.level) * take
                    remaining -= take
                    deal.size -= take
                    status = "PARTIALLY_CLOSED"
                    if deal.size <= 1e-12:
                        self.state.deals.remove(deal)
                        status = "FULLY_CLOSED"
                    conf["affectedDeals"].append({"dealId": deal.deal_id, "status": status})
                    actions.append({"actionType": "POSITION_CLOSED" if status == "FULLY_CLOSED"
                                    else "POSITION_PARTIALLY_CLOSED",
                                    "affectedDealId": deal.deal_id})
            if remaining > 1e-12:
                self.state.deals.append(FakeDeal(
                    deal_id=deal_id, deal_reference=ref, epic=epic, expiry=body["expiry"],
                    direction=direction, size=remaining, level=level,
                    currency=body["currencyCode"], created=now, limit_level=limit, stop_level=stop,
                    guaranteed_stop=bool(body.get("guaranteedStop")),
                ))
                conf["affectedDeals"].append({"dealId": deal_id, "status": "OPENED"})
                conf.update(status="OPEN", stopLevel=stop, limitLevel=limit)
                actions.append({"actionType": "POSITION_OPENED", "affectedDealId": deal_id})
            else:
                conf["status"] = "CLOSED"
            if closed_any:
                self.balance += profit
                conf.update(profit=round(profit, 10), profitCurrency=self.currency)
            self.state.confirms[ref] = conf
            opened = remaining > 1e-12
            self._record_activity(now, deal_id, ref, epic, body["expiry"], API_CHANNEL, actions,
                                  direction, size, level, stop if opened else None,
                                  limit if opened else None, body)
            return ref

    @staticmethod
    def _attached_levels(body: dict[str, Any], direction: str,
                         level: float) -> tuple[float | None, float | None]:
        """(stop, limit) levels of an opening deal: given as levels, or as distances from
        the fill."""
        stop, limit = body.get("stopLevel"), body.get("limitLevel")
        sign = 1 if direction == "BUY" else -1
        if body.get("stopDistance") is not None:
            stop = level - sign * float(body["stopDistance"])
        if body.get("limitDistance") is not None:
            limit = level + sign * float(body["limitDistance"])
        return (None if stop is None else float(stop)), (None if limit is None else float(limit))

    def _rule_break(self, epic: str, direction: str, size: float, stop: float | None,
                    limit: float | None) -> str | None:
        """IG's reason when a deal breaks the market's dealing rules, or None. A BUY's stop
        must lie below the bid (it would trigger at once) and at least min_stop_distance
        below the fill (the offer); its limit at least min_limit_distance above the fill.
        A SELL mirror-wise (stop above the offer, limit below the fill at the bid)."""
        rules = self.rules_for(epic)
        if size < rules.min_deal_size - _EPS:
            return "MINIMUM_ORDER_SIZE_ERROR"
        bid, offer = self.prices[epic]
        if direction == "BUY":  # fills at the offer, closes at the bid
            stop_gap, stop_side, limit_gap = offer - (stop or 0.0), bid - (stop or 0.0), \
                (limit or 0.0) - offer
        else:  # fills at the bid, closes at the offer
            stop_gap, stop_side, limit_gap = (stop or 0.0) - bid, (stop or 0.0) - offer, \
                bid - (limit or 0.0)
        stop_ok = stop is None or (stop_side > _EPS
                                   and stop_gap >= rules.min_stop_distance - _EPS)
        limit_ok = limit is None or (limit_gap > _EPS
                                     and limit_gap >= rules.min_limit_distance - _EPS)
        return None if stop_ok and limit_ok else "ATTACHED_ORDER_LEVEL_ERROR"

    def _trigger_attached(self, epic: str) -> None:
        """Close every deal of `epic` whose stop or limit the current quote reaches (the
        caller holds the lock)."""
        if self.market_status.get(epic, "TRADEABLE") != "TRADEABLE":
            return
        bid, offer = self.prices[epic]
        for deal in [d for d in self.state.deals if d.epic == epic]:
            buy = deal.direction == "BUY"
            price = bid if buy else offer  # a BUY closes by selling at the bid
            exit_level = None
            if deal.stop_level is not None and (
                    price <= deal.stop_level + _EPS if buy else price >= deal.stop_level - _EPS):
                exit_level = deal.stop_level if deal.guaranteed_stop else price
            elif deal.limit_level is not None and (
                    price >= deal.limit_level - _EPS if buy else price <= deal.limit_level + _EPS):
                exit_level = deal.limit_level
            if exit_level is not None:
                self._system_close(deal, exit_level)

    def _system_close(self, deal: FakeDeal, exit_level: float) -> None:
        """IG closes `deal` at `exit_level` by itself (a stop or limit triggered)."""
        n = next(self._ids)
        deal_id, ref = f"DIAAAA{n:08d}", f"SYS{n:08d}"
        sign = 1 if deal.direction == "BUY" else -1
        profit = sign * (exit_level - deal.level) * deal.size
        self.balance += profit
        self.state.deals.remove(deal)
        close_direction = "SELL" if deal.direction == "BUY" else "BUY"
        now = self.now()
        self.state.confirms[ref] = {
            "date": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3], "status": "CLOSED",
            "reason": "SUCCESS", "dealStatus": "ACCEPTED", "epic": deal.epic,
            "expiry": deal.expiry, "dealReference": ref, "dealId": deal_id,
            "affectedDeals": [{"dealId": deal.deal_id, "status": "FULLY_CLOSED"}],
            "level": exit_level, "size": deal.size, "direction": close_direction,
            "stopLevel": None, "limitLevel": None, "stopDistance": None, "limitDistance": None,
            "guaranteedStop": False, "trailingStop": False,
            "profit": round(profit, 10), "profitCurrency": self.currency,
        }
        self._record_activity(
            now, deal_id, ref, deal.epic, deal.expiry, "SYSTEM",
            [{"actionType": "POSITION_CLOSED", "affectedDealId": deal.deal_id}],
            close_direction, deal.size, exit_level, None, None, {"currencyCode": deal.currency})

    def _record_activity(self, now: datetime, deal_id: str, ref: str, epic: str, expiry: str,
                         channel: str, actions: list[dict[str, Any]], direction: str,
                         size: float, level: float | None, stop: float | None,
                         limit: float | None, body: dict[str, Any],
                         status: str = "ACCEPTED") -> None:
        """One POSITION activity, as IG's v3 history lists it (detailed)."""
        last = self.state.activities[-1][0] if self.state.activities else None
        at = now if last is None or now > last else last + timedelta(microseconds=1)
        kinds = {a["actionType"] for a in actions}
        short = deal_id[-8:]
        if status != "ACCEPTED":
            description = f"Rejected: {self.state.confirms[ref]['reason']}"
        elif kinds == {"POSITION_OPENED"}:
            description = f"Position opened: {short}"
        elif "POSITION_PARTIALLY_CLOSED" in kinds and "POSITION_CLOSED" not in kinds:
            description = f"Position partially closed: {short}"
        else:
            description = f"Position/s closed: {short}"
        self.state.activities.append((at, {
            "date": at.strftime(_ACTIVITY_TIME), "epic": epic, "period": expiry,
            "dealId": deal_id, "channel": channel, "type": "POSITION", "status": status,
            "description": description,
            "details": {
                "dealReference": ref, "actions": actions, "marketName": epic,
                "goodTillDate": None, "currency": body.get("currencyCode") or self.currency,
                "size": size, "direction": direction, "level": level, "stopLevel": stop,
                "stopDistance": body.get("stopDistance"),
                "guaranteedStop": bool(body.get("guaranteedStop")),
                "trailingStopDistance": None, "trailingStep": None, "limitLevel": limit,
                "limitDistance": body.get("limitDistance"),
            },
        }))

    @route("DELETE", PREFIX + "/positions/otc")
    def close_position(self, req: Request) -> Response:
        body = req.json() or {}
        if (body.get("dealId") is None) == (body.get("epic") is None):
            return _err(400, "error.service.close.position.deal-id-or-epic")
        with self.lock:
            deal = next((d for d in self.state.deals
                         if d.deal_id == body.get("dealId")
                         or (body.get("epic") and d.epic == body["epic"])), None)
        if deal is None:
            return _err(404, "error.service.marketdata.position.notional.details.null")
        if body.get("direction") == deal.direction:
            return _err(400, "error.service.close.position.direction-must-oppose")
        close = {"currencyCode": deal.currency, "direction": body["direction"],
                 "epic": deal.epic, "expiry": deal.expiry, "forceOpen": False,
                 "orderType": "MARKET", "size": min(float(body.get("size") or deal.size),
                                                    deal.size)}
        return Response(200, {"dealReference": self._deal(close, None, opening_rules=False)})

    # ------------------------------------------------------------------ activity
    @staticmethod
    def _parse_query_time(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    @staticmethod
    def _fiql(expr: str) -> Callable[[dict[str, Any]], bool] | None:
        """A FIQL subset (`field==v`, `field!=v`; `;` and, `,` or) on top-level fields."""
        groups = []
        for group in expr.split(","):
            terms = []
            for term in group.split(";"):
                m = re.fullmatch(r"(\w+)(==|!=)(.*)", term.strip())
                if m is None:
                    return None
                terms.append((m.group(1), m.group(2) == "==", m.group(3)))
            groups.append(terms)
        return lambda a: any(all((str(a.get(f)) == v) is eq for f, eq, v in terms)
                             for terms in groups)

    @route("GET", PREFIX + "/history/activity/?")
    def activity_v3(self, req: Request) -> Response:
        if req.headers.get("version") != "3":
            return _err(400, "fake: GET /history/activity expects VERSION 3")
        q = req.query
        try:
            lo = self._parse_query_time(q["from"]) if q.get("from") else None
            hi = self._parse_query_time(q["to"]) if q.get("to") else None
        except ValueError:
            return _err(400, "validation.invalid.date")
        try:
            page_size = int(q.get("pageSize", 50))
        except ValueError:
            return _err(400, "validation.invalid.pageSize")
        if page_size <= 0:
            return _err(400, "validation.invalid.pageSize")
        match = self._fiql(q["filter"]) if q.get("filter") else (lambda _a: True)
        if match is None:
            return _err(400, "validation.invalid.filter")
        deal_id = q.get("dealId")
        detailed = q.get("detailed", "false").lower() == "true"
        with self.lock:
            rows = [(at, a) for at, a in reversed(self.state.activities)
                    if (lo is None or at >= lo) and (hi is None or at < hi) and match(a)
                    and (deal_id is None or a["dealId"] == deal_id
                         or any(x["affectedDealId"] == deal_id
                                for x in a["details"]["actions"]))]
        page = rows[:page_size]
        next_link = None
        if len(rows) > page_size:
            query = {k: v for k, v in (("from", q.get("from")), ("dealId", deal_id),
                                       ("filter", q.get("filter"))) if v}
            query["to"] = page[-1][0].strftime(_ACTIVITY_TIME + ".%f")
            query.update(detailed="true" if detailed else "false", pageSize=str(page_size))
            next_link = "/history/activity?" + urlencode({"version": "3", **query})
        out = [{**a, "details": a["details"] if detailed else None} for _, a in page]
        return Response(200, {"activities": out,
                              "metadata": {"paging": {"size": len(out), "next": next_link}}})

    # ------------------------------------------------------------------ prices
    @staticmethod
    def bar_for(epic: str, start_utc: datetime, resolution_seconds: int) -> dict[str, float]:
        """The deterministic mid OHLC of the bar starting at `start_utc` (spread 0.0002)."""
        k = int(start_utc.timestamp()) // resolution_seconds
        base = 1.0 + (sum(map(ord, epic)) % 7) * 0.1
        o = base + (k % 50) * 0.001
        c = o + (0.0005 if k % 2 else -0.0005)
        return {"open": o, "high": max(o, c) + 0.0003, "low": min(o, c) - 0.0003, "close": c}

    def _price_row(self, epic: str, start_utc: datetime, res: int) -> dict[str, Any]:
        mid = self.bar_for(epic, start_utc, res)
        half = 0.0001

        def leg(v: float) -> dict[str, Any]:
            return {"bid": round(v - half, 6), "ask": round(v + half, 6), "lastTraded": None}

        row: dict[str, Any] = {
            "snapshotTime": start_utc.astimezone(LONDON).strftime("%Y/%m/%d %H:%M:%S"),
            "openPrice": leg(mid["open"]), "closePrice": leg(mid["close"]),
            "highPrice": leg(mid["high"]), "lowPrice": leg(mid["low"]),
            "lastTradedVolume": 100 + (int(start_utc.timestamp()) // res) % 10,
        }
        if self.include_snapshot_utc:
            row["snapshotTimeUTC"] = start_utc.strftime("%Y-%m-%dT%H:%M:%S")
        return row

    @staticmethod
    def _parse_local(text: str) -> datetime:
        naive = datetime.fromisoformat(text.replace("/", "-").replace(" ", "T"))
        return naive.replace(tzinfo=LONDON).astimezone(UTC)

    @route("GET", PREFIX + "/prices/(?P<epic>[^/]+)")
    def prices_v3(self, req: Request, epic: str) -> Response:
        if req.headers.get("version") != "3":
            return _err(400, "fake: GET /prices/{epic} expects VERSION 3")
        if epic in self.unknown_epics:
            return _err(404, "error.service.marketdata.instrument.epic.unavailable")
        q = req.query
        resolution = q.get("resolution", "MINUTE")
        if resolution not in RESOLUTION_SECONDS:
            return _err(400, "validation.invalid.resolution")
        res = RESOLUTION_SECONDS[resolution]
        if "from" in q:
            start = self._parse_local(q["from"])
            end = self._parse_local(q["to"]) if "to" in q else self.now()
        else:
            end = self.now()
            start = end - timedelta(seconds=res * int(q.get("max", 10)))
        first = math.ceil(start.timestamp() / res) * res
        stamps = [datetime.fromtimestamp(t, UTC)
                  for t in range(first, int(end.timestamp()) + 1, res)]
        if "max" in q:
            stamps = stamps[-int(q["max"]):]
        page_size = int(q.get("pageSize", 20))
        page_number = int(q.get("pageNumber", 1))
        if page_size <= 0:
            pages, chunk = (1 if stamps else 0), stamps
        else:
            pages = math.ceil(len(stamps) / page_size)
            chunk = stamps[(page_number - 1) * page_size: page_number * page_size]
        with self.lock:
            if len(chunk) > self.remaining_allowance or self.remaining_allowance <= 0:
                return _err(403, "error.public-api.exceeded-account-historical-data-allowance")
            self.remaining_allowance -= len(chunk)
            allowance = {"remainingAllowance": self.remaining_allowance,
                         "totalAllowance": self.total_allowance,
                         "allowanceExpiry": self.allowance_expiry}
        return Response(200, {
            "prices": [self._price_row(epic, t, res) for t in chunk],
            "instrumentType": "CURRENCIES",
            "metadata": {"allowance": allowance, "size": len(chunk),
                         "pageData": {"pageSize": page_size, "pageNumber": page_number,
                                      "totalPages": pages}},
        })


@contextmanager
def make_ig_under_test(**fake_kw: Any) -> Iterator[tuple[Any, FakeIG]]:
    """An `IGBroker` wired to a fresh `FakeIG` (for the cross-broker contract suite).

    The broker uses a 0.5 s HTTP timeout (the fake's slow answers take 1.5 s) and a no-op
    sleep, so confirmation polling and rate-limit back-off never wait for real: a few
    scripted 403s are waited out, five or more in a row surface as `RateLimited`.
    Quote an epic with `fake.set_price(epic, price)` before trading it.
    """
    from trading_assets.adapters.ig.broker import IGBroker

    fake = FakeIG(**fake_kw).start()
    try:
        broker = IGBroker(
            fake.username, fake.password, fake.api_key, acc_type="demo",
            base_url=fake.base_url, timeout=0.5, sleep=lambda _s: None,
        )
        yield broker, fake
    finally:
        fake.stop()


# ---------------------------------------------------------------------------- streaming


class FakeLightstreamer:
    """A loopback Lightstreamer server speaking the TLCP-2.4.0 subset IG's stream uses.

    WebSocket `/lightstreamer` (subprotocol `TLCP-2.4.0.lightstreamer.com`): `wsok` ->
    `WSOK`; `create_session` -> `CONOK` (or `CONERR` when the password is not the
    expected `CST-…|XST-…`); `control` add/delete -> `REQOK` + `SUBOK`/`UNSUB`. `push()`
    sends `U,<subId>,<item>,v1|v2|…` to every subscription holding the item.
    Runs aiohttp on its own event loop in a daemon thread; `stop()` ends it.
    """

    SUBPROTOCOL = "TLCP-2.4.0.lightstreamer.com"

    def __init__(self, accept_password: Callable[[str, str], bool] | None = None) -> None:
        self.accept_password = accept_password or (lambda _user, _pw: True)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sessions: list[dict[str, str]] = []
        self._subs: dict[tuple[int, str], tuple[Any, list[str], list[str]]] = {}
        self._loop: Any = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self.port = 0
        self.subscribed = threading.Event()
        self._sockets: set[Any] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLightstreamer:
        import asyncio

        from aiohttp import web

        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def boot() -> None:
            app = web.Application()
            app.router.add_get("/lightstreamer", self._ws)
            self._runner = web.AppRunner(app, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(boot())
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-lightstreamer", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Lightstreamer did not start")
        return self

    def stop(self) -> None:
        import asyncio

        if self._loop is None:
            return
        loop, self._loop = self._loop, None

        async def down() -> None:
            for ws in list(self._sockets):  # open streams would hold cleanup up
                await ws.close()
            await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(down(), loop).result(10)
        except Exception:  # a slow shutdown must not fail the test that used the fake
            pass
        finally:
            loop.call_soon_threadsafe(loop.stop)

    @staticmethod
    def _params(line: str) -> dict[str, str]:
        from urllib.parse import parse_qsl

        return dict(parse_qsl(line, keep_blank_values=True))

    async def _ws(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web

        ws = web.WebSocketResponse(protocols=(self.SUBPROTOCOL,))
        await ws.prepare(request)
        self._sockets.add(ws)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            lines = [ln for ln in msg.data.split("\r\n") if ln]
            if not lines:
                continue
            name = lines[0]
            if name == "wsok":
                await ws.send_str("WSOK\r\n")
                continue
            for line in lines[1:] or [""]:
                params = self._params(line)
                self.requests.append((name, params))
                await self._handle(ws, name, params)
        for key in [k for k, v in self._subs.items() if v[0] is ws]:
            self._subs.pop(key, None)
        self._sockets.discard(ws)
        return ws

    async def _handle(self, ws: Any, name: str, p: dict[str, str]) -> None:
        if name in ("create_session", "bind_session"):
            if name == "create_session" and not self.accept_password(
                    p.get("LS_user", ""), p.get("LS_password", "")):
                await ws.send_str("CONERR,1,User/password check failed\r\n")
                await ws.close()
                return
            self.sessions.append(p)
            await ws.send_str(f"CONOK,S{len(self.sessions)},50000,50000,*\r\n")
            await ws.send_str("SERVNAME,Fake IG Lightstreamer\r\n")
            await ws.send_str("CLIENTIP,127.0.0.1\r\n")
            await ws.send_str("CONS,unlimited\r\n")
        elif name == "control":
            req_id, op = p.get("LS_reqId", "0"), p.get("LS_op")
            sub_id = int(p.get("LS_subId", "0"))
            if op == "add":
                items = p.get("LS_group", "").split(" ")
                fields = p.get("LS_schema", "").split(" ")
                self._subs[(id(ws), str(sub_id))] = (ws, items, fields)
                await ws.send_str(f"REQOK,{req_id}\r\n")
                await ws.send_str(f"SUBOK,{sub_id},{len(items)},{len(fields)}\r\n")
                self.subscribed.set()
            elif op == "delete":
                self._subs.pop((id(ws), str(sub_id)), None)
                await ws.send_str(f"REQOK,{req_id}\r\nUNSUB,{sub_id}\r\n")
            else:
                await ws.send_str(f"REQOK,{req_id}\r\n")
        elif name == "heartbeat":
            pass

    def push(self, item: str, values: dict[str, Any]) -> int:
        """Send one update of `item` to every subscription of it; returns how many."""
        import asyncio

        def enc(v: Any) -> str:
            if v is None:
                return "#"
            text = str(v)
            return "$" if text == "" else text.replace("%", "%25").replace("|", "%7C")

        async def send() -> int:
            sent = 0
            for (_ws_id, sub_id), (ws, items, fields) in list(self._subs.items()):
                if item in items and not ws.closed:
                    row = "|".join(enc(values[f]) if f in values else "" for f in fields)
                    await ws.send_str(f"U,{sub_id},{items.index(item) + 1},{row}\r\n")
                    sent += 1
            return sent

        assert self._loop is not None, "server not started"
        return asyncio.run_coroutine_threadsafe(send(), self._loop).result(10)
