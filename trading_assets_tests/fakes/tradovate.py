"""A loopback fake of Tradovate's REST API (v1), wire-faithful where it matters.

Speaks the shapes in `broker-wire-spec.md` section 3 and the entity schemas of
`tradovate/example-api-csharp-trading` (`Order`, `Command`, `OrderVersion`, `Fill`,
`Position`, `CommandResult`, `CashBalanceSnapshot`, `AccessTokenResponse`):

- `POST /auth/accesstokenrequest`: a failed login is HTTP 200 with `errorText`;
  tokens expire at `expirationTime` (on the fake's clock); `GET /auth/renewaccesstoken`
  renews a token that is still valid, and refuses (401) one that expired or was revoked
  (`fault_expire_session`): a dead token cannot be renewed, only replaced by a login.
- Authentication is limited to 10 requests per minute (logins and renewals together,
  refused ones included). Over the limit the answer is HTTP 200 with a penalty ticket;
  from `accesstokenrequest` it always carries `p-captcha: true` (no API client can clear
  it: about an hour). `login_count()`/`renew_count()` say how many reached the server.
- Orders carry no `clOrdId`: it lives on the `Command` that created the order, so a
  client reconciles through `/command/list` (+ `/order/item`, `/orderVersion/deps`,
  `/fill/deps`). The fake does **not** deduplicate `clOrdId`, like the real server.
- Business rejects are HTTP 200 `{failureReason, failureText}`; penalty tickets are HTTP
  200 `{p-ticket, p-time, p-captcha}`; 429 with an empty body is a one-hour lockout.
- Market orders fill at the price set with `set_price`; OSO brackets go working when the
  entry fills and are matched (one cancels the other) when `set_price` crosses them.
  With `fill_in_steps(fractions)` a market order is answered still Working and fills
  later, in whole-contract parts, one per market move (`set_price`).

The fake also keeps score of client misbehaviour: `hammered` counts requests that arrived
during a lockout or before a penalty ticket's `p-time` had elapsed.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trading_assets.adapters.tradovate.broker import TradovateBroker
from trading_assets_tests.fakes.base import FakeServer, Request, Response, route

FAKE_USERNAME = "tv-demo-user"
FAKE_PASSWORD = "tv-pw-5e3b91d0c2"  # distinctive, so leak tests can search for it
FAKE_APP_ID = "trading_assets"
FAKE_APP_VERSION = "1.0"
FAKE_CID = 8
FAKE_SEC = "tv-sec-7f2a4c88e1b94d06"

BAD_LOGIN_TEXT = (
    "Incorrect username or password. Please try again, noting that passwords are case-sensitive."
)
FAILURE_REASONS = {
    "AccountClosed", "AdvancedTrailingStopUnsupported", "AnotherCommandPending",
    "BackMonthProhibited", "ExecutionProviderNotConfigured", "ExecutionProviderUnavailable",
    "InvalidContract", "InvalidPrice", "LiquidationOnly", "LiquidationOnlyBeforeExpiration",
    "MaxOrderQtyIsNotSpecified", "MaxOrderQtyLimitReached", "MaxPosLimitMisconfigured",
    "MaxPosLimitReached", "MaxTotalPosLimitReached", "MultipleAccountPlanRequired", "NoQuote",
    "NotEnoughLiquidity", "OtherExecutionRelated", "ParentRejected", "RiskCheckTimeout",
    "SessionClosed", "TooLate", "TradingLocked", "TrailingStopNonOrderQtyModify",
    "Unauthorized", "UnknownReason", "Unsupported",
}
ORDER_POSTS = r"/v1/order/(placeorder|placeoso|liquidateposition)"
LOGIN_PATH = "/v1/auth/accesstokenrequest"
RENEW_PATH = "/v1/auth/renewaccesstoken"
AUTH_LIMIT = (10, timedelta(minutes=1))  # published: 10 authentication requests per minute
_ORDER_TYPES = {"Market", "Limit", "Stop", "StopLimit", "MIT", "QTS", "TrailingStop",
                "TrailingStopLimit"}


class FakeClock:
    """Wall-clock stand-in shared by the broker and the fake: only moves on `sleep` or
    `advance`, so token expiry and penalty waits are tested without waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(float(seconds))
            self._now += timedelta(seconds=max(0.0, float(seconds)))

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class _Contract:
    id: int
    name: str
    price: float | None
    point_value: float
    margin: float


@dataclass
class _Penalty:
    ticket: str
    not_before: datetime
    method: str
    path: str


@dataclass
class _Account:
    id: int
    name: str
    user_id: int
    cash: float
    realized: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class TradovateFake(FakeServer):
    """Tradovate REST on 127.0.0.1 under `/v1` (see module docstring)."""

    def __init__(self, *, clock: FakeClock | None = None,
                 token_lifetime: timedelta = timedelta(minutes=80),
                 starting_cash: float = 50_000.0) -> None:
        super().__init__()
        self.clock = clock or FakeClock()
        self.token_lifetime = token_lifetime
        self.users = {FAKE_USERNAME: FAKE_PASSWORD}
        self.apps = {(FAKE_APP_ID, FAKE_CID, FAKE_SEC)}
        self.tokens: dict[str, datetime] = {}
        self.user_id = 51001
        self.accounts = [_Account(id=700123, name="DEMO700123", user_id=self.user_id,
                                  cash=starting_cash)]
        self.contracts: dict[int, _Contract] = {}
        self._ids = itertools.count(2_300_000_001)
        for name, price, pv, margin in (("MESZ6", 5850.25, 5.0, 1_600.0),
                                        ("MNQZ6", 20450.5, 2.0, 2_100.0),
                                        ("ESZ6", 5850.25, 50.0, 16_000.0)):
            self._add_contract(name, price, pv, margin)
        self.orders: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, dict[str, Any]] = {}
        self.commands: list[dict[str, Any]] = []
        self.command_reports: list[dict[str, Any]] = []
        self.fills: list[dict[str, Any]] = []
        self.positions: dict[tuple[int, int], dict[str, Any]] = {}
        self.penalties: dict[str, _Penalty] = {}
        self.lockout_until: datetime | None = None
        self.hammered = 0  # requests during a lockout or before p-time elapsed
        self.auth_times: list[datetime] = []  # every auth request that reached the server
        self.timeout_delay = 2.0  # seconds a "timeout_after_accept" answer is held back
        # How new market orders fill. None: completely inside the POST. A list of
        # fractions of the quantity: the order stays Working, one fill per market move.
        self.fill_steps: list[float] | None = None

    # ================================================================ test helpers
    def fault_expire_session(self) -> None:
        """The server revokes every issued token now: the next authenticated call gets
        401, and so does an attempt to renew one of them."""
        with self.lock:
            self.tokens.clear()

    def fault_revoke_at(self, path: str = ORDER_POSTS) -> None:
        """The server revokes every issued token just as the next request matching
        `path` arrives, so that very request gets 401 (e.g. an order POST after the
        lookups before it went through)."""
        self.faults.add("revoke", path=path)

    def fault_rate_limit(self, times: int = 1, p_time: float = 3.0,
                         path: str = r"^/v1/(?!auth/)") -> None:
        """The next `times` API calls (matching `path`) get a penalty ticket (HTTP 200 +
        `p-ticket`) instead of an answer."""
        self.faults.add("p_ticket", path=path, times=times, p_time=p_time)

    def fault_captcha(self) -> None:
        """The next login gets `p-captcha: true`: no API client can clear it."""
        self.faults.add("p_ticket", path=r"/auth/accesstokenrequest", p_time=3600.0,
                        captcha=True)

    def fault_lockout(self, status: int = 429) -> None:
        """The next call gets 423 (warning) or 429 (one-hour lockout, empty body)."""
        self.faults.add("lockout", path=r"^/v1/(?!auth/)", status=status)

    def fault_timeout_after_accept(self) -> None:
        """The next order POST is executed, but the answer comes too late for the client."""
        self.faults.add("timeout_after_accept", path=ORDER_POSTS, method="POST")

    def fault_reject_next(self, reason: str) -> None:
        """The next order POST is refused inside HTTP 200 (`failureReason`/`failureText`)."""
        self.faults.add("reject", path=ORDER_POSTS, method="POST", reason=reason)

    def fault_reject_after_accept(self, reason: str = "MaxPosLimitReached",
                                  text: str = "") -> None:
        """The next order POST answers `{orderId}` but risk rejects the order: it is
        `Rejected`, and the command report carries `rejectReason`/`text`."""
        self.faults.add("reject_after_accept", path=r"/v1/order/(placeorder|placeoso)",
                        method="POST", reason=reason, text=text)

    def fault_server_error(self, accepted: bool = False) -> None:
        """The next order POST answers 500 (after executing it if `accepted`)."""
        self.faults.add("server_error", path=ORDER_POSTS, method="POST", accepted=accepted)

    def fault_error_text(self, text: str, path: str | None = None) -> None:
        """The next matching call answers HTTP 200 `{"errorText": text}`."""
        self.faults.add("error_text", path=path, text=text)

    def fill_in_steps(self, fractions: list[float]) -> None:
        """Market orders placed from now on are answered `{orderId}` and stay Working,
        unfilled, then get one fill (whole contracts) at each later market move
        (`set_price`), so a client sees it only on a later poll: `[1.0]` fills at the
        next move, `[0.5, 0.5]` in two partial fills."""
        if not fractions or any(f <= 0 for f in fractions):
            raise ValueError(f"fill fractions must be positive, got {fractions!r}")
        self.fill_steps = list(fractions)

    def set_price(self, symbol: str, price: float) -> None:
        """Move the market: later market orders fill here; working orders are matched."""
        with self.lock:
            contract = self._contract_by_name(symbol)
            if contract is None:
                contract = self._add_contract(symbol, price, 5.0, 1_600.0)
            contract.price = float(price)
            self._match_working(contract, market_move=True)

    def order_count(self, client_order_id: str | None = None) -> int:
        """Orders the server holds (all, or those created with this `clOrdId`)."""
        with self.lock:
            if client_order_id is None:
                return len(self.orders)
            return sum(1 for c in self.commands
                       if c["commandType"] == "New" and c.get("clOrdId") == client_order_id)

    def login_count(self) -> int:
        """How many `accesstokenrequest` calls reached the server (refused ones too)."""
        return sum(1 for r in self.requests if r.path == LOGIN_PATH)

    def renew_count(self) -> int:
        """How many `renewaccesstoken` calls reached the server (refused ones too)."""
        return sum(1 for r in self.requests if r.path == RENEW_PATH)

    def order_posts(self) -> int:
        """How many order-placing requests reached the server."""
        return sum(1 for r in self.requests if re.fullmatch(ORDER_POSTS, r.path))

    def bodies(self, path_suffix: str) -> list[dict[str, Any]]:
        """JSON bodies received on paths ending with `path_suffix`, oldest first."""
        return [r.json() for r in self.requests if r.path.endswith(path_suffix) and r.body]

    def net_pos(self, symbol: str) -> int:
        with self.lock:
            c = self._contract_by_name(symbol)
            pos = self.positions.get((self.accounts[0].id, c.id)) if c else None
            return int(pos["netPos"]) if pos else 0

    # ================================================================ plumbing
    def start(self) -> TradovateFake:
        super().start()
        # Headers and body go out as two writes; without TCP_NODELAY every answer waits
        # ~40 ms for a delayed ACK, which makes a test suite crawl.
        assert self._httpd is not None
        self._httpd.RequestHandlerClass.disable_nagle_algorithm = True
        return self

    def stop(self) -> None:
        """Stop without waiting out the serve loop's 0.5 s poll: poke it awake."""
        if self._httpd is None:
            return
        port = self.port
        stopper = threading.Thread(target=super().stop, daemon=True)
        stopper.start()
        while stopper.is_alive():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            except OSError:
                break
            stopper.join(0.02)
        stopper.join()

    def dispatch(self, req: Request) -> Response:
        with self.lock:
            return super().dispatch(req)

    def _now(self) -> datetime:
        return self.clock.now()

    def _gate(self, req: Request, *, auth: bool = True) -> Response | None:
        """Lockouts, penalty tickets, scripted rate limits and the bearer token, in the
        order the real server applies them (limits before auth)."""
        now = self._now()
        if self.lockout_until is not None and now < self.lockout_until:
            self.hammered += 1
            return Response(429, b"")
        body = req.json() if req.body else None
        sent_ticket = body.get("p-ticket") if isinstance(body, dict) else None
        key = f"{req.method} {req.path}"
        pending = self.penalties.get(key)
        if pending is not None:
            if now < pending.not_before:
                self.hammered += 1
                return self._ticket(key, req, seconds=(pending.not_before - now).total_seconds()
                                    * 2)
            if req.method == "POST" and sent_ticket != pending.ticket:
                return self._ticket(key, req, seconds=1.0)  # must resend with the ticket
            del self.penalties[key]
        if req.path in (LOGIN_PATH, RENEW_PATH):
            limit, window = AUTH_LIMIT
            self.auth_times = [t for t in self.auth_times if now - t < window] + [now]
            if len(self.auth_times) > limit:
                if req.path == LOGIN_PATH:  # from accesstokenrequest always a captcha
                    return self._ticket(key, req, seconds=3600.0, captcha=True)
                wait = (self.auth_times[0] + window - now).total_seconds()
                return self._ticket(key, req, seconds=max(1.0, wait))
        fault = self.faults.take(req, kinds=("lockout", "p_ticket", "error_text"))
        if fault is not None:
            if fault.kind == "lockout":
                status = int(fault.params.get("status", 429))
                if status == 429:
                    self.lockout_until = now + timedelta(hours=1)
                return Response(status, b"")
            if fault.kind == "p_ticket":
                return self._ticket(key, req, seconds=float(fault.params.get("p_time", 3.0)),
                                    captcha=bool(fault.params.get("captcha", False)))
            return Response(200, {"errorText": fault.params["text"]})
        if auth:
            if self.faults.take(req, kinds=("revoke",)) is not None:
                self.tokens.clear()
            header = req.headers.get("authorization", "")
            token = header[7:] if header.startswith("Bearer ") else None
            expires = self.tokens.get(token or "")
            if expires is None or now >= expires:
                return Response(401, "Access is denied")
        return None

    def _ticket(self, key: str, req: Request, *, seconds: float,
                captcha: bool = False) -> Response:
        ticket = secrets.token_hex(12)
        self.penalties[key] = _Penalty(ticket, self._now() + timedelta(seconds=seconds),
                                       req.method, req.path)
        return Response(200, {"p-ticket": ticket, "p-time": max(1, math.ceil(seconds)),
                              "p-captcha": captcha})

    def _issue_token(self) -> dict[str, Any]:
        token = secrets.token_urlsafe(24)
        expires = self._now() + self.token_lifetime
        self.tokens[token] = expires
        return {
            "accessToken": token, "mdAccessToken": secrets.token_urlsafe(24),
            "expirationTime": _iso(expires),
            "passwordExpirationTime": _iso(self._now() + timedelta(days=180)),
            "userStatus": "Active", "userId": self.user_id, "name": FAKE_USERNAME,
            "hasLive": False,
        }

    def _add_contract(self, name: str, price: float | None, pv: float, margin: float
                      ) -> _Contract:
        cid = 3_000_000 + len(self.contracts) + 1
        contract = _Contract(cid, name, price, pv, margin)
        self.contracts[cid] = contract
        return contract

    def _contract_by_name(self, name: str) -> _Contract | None:
        return next((c for c in self.contracts.values() if c.name == name), None)

    def _account_for(self, body: dict[str, Any]) -> _Account | None:
        acct_id, spec = body.get("accountId"), body.get("accountSpec")
        for a in self.accounts:
            if (acct_id is None or acct_id == a.id) and (spec is None or spec == a.name):
                return a
        return None

    # ================================================================ auth
    @route("POST", r"/v1/auth/accesstokenrequest")
    def access_token_request(self, req: Request) -> Response:
        gate = self._gate(req, auth=False)
        if gate is not None:
            return gate
        body = req.json() or {}
        missing = [k for k in ("name", "password", "appId", "appVersion", "cid", "sec")
                   if k not in body]
        if missing:
            return Response(400, f"missing fields: {missing}")
        if self.users.get(body["name"]) != body["password"]:
            return Response(200, {"errorText": BAD_LOGIN_TEXT})
        if (body["appId"], body["cid"], body["sec"]) not in self.apps:
            return Response(200, {"errorText": "The app is not registered"})
        return Response(200, self._issue_token())

    @route("GET", r"/v1/auth/renewaccesstoken")
    def renew_access_token(self, req: Request) -> Response:
        # The bearer check in the gate is the renewal's own rule: only a token that is
        # still valid can be renewed; an expired or revoked one is refused with 401.
        gate = self._gate(req)
        return gate if gate is not None else Response(200, self._issue_token())

    # ================================================================ reads
    @route("GET", r"/v1/account/list")
    def account_list(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        return Response(200, [
            {"id": a.id, "name": a.name, "userId": a.user_id, "accountType": "Customer",
             "active": True, "clearingHouseId": 2, "riskCategoryId": 2,
             "autoLiqProfileId": 2, "marginAccountType": "Speculator",
             "legalStatus": "Individual", "archived": False,
             "timestamp": _iso(self._now())}
            for a in self.accounts
        ])

    @route("POST", r"/v1/cashBalance/getcashbalancesnapshot")
    def cash_balance_snapshot(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        body = req.json() or {}
        acct = next((a for a in self.accounts if a.id == body.get("accountId")), None)
        if acct is None:
            return Response(200, {"errorText": "Access is denied"})
        open_pnl = margin = 0.0
        for (aid, cid), pos in self.positions.items():
            if aid != acct.id or not pos["netPos"]:
                continue
            c = self.contracts[cid]
            mark = c.price if c.price is not None else pos["netPrice"]
            open_pnl += (mark - pos["netPrice"]) * pos["netPos"] * c.point_value
            margin += abs(pos["netPos"]) * c.margin
        return Response(200, {
            "totalCashValue": acct.cash, "totalPnL": acct.realized + open_pnl,
            "initialMargin": margin, "maintenanceMargin": margin * 0.9,
            "netLiq": acct.cash + open_pnl, "openPnL": open_pnl,
            "realizedPnL": acct.realized, "weekRealizedPnL": acct.realized,
        })

    @route("GET", r"/v1/contract/find")
    def contract_find(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        c = self._contract_by_name(req.query.get("name", ""))
        if c is None:
            return Response(404, "Not found")
        return Response(200, {"id": c.id, "name": c.name, "contractMaturityId": c.id // 10})

    @route("GET", r"/v1/contract/item")
    def contract_item(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        c = self.contracts.get(int(req.query.get("id", "0")))
        if c is None:
            return Response(404, "Not found")
        return Response(200, {"id": c.id, "name": c.name, "contractMaturityId": c.id // 10})

    @route("GET", r"/v1/position/list")
    def position_list(self, req: Request) -> Response:
        gate = self._gate(req)
        return gate if gate is not None else Response(200, list(self.positions.values()))

    @route("GET", r"/v1/order/list")
    def order_list(self, req: Request) -> Response:
        gate = self._gate(req)
        return gate if gate is not None else Response(200, list(self.orders.values()))

    @route("GET", r"/v1/order/item")
    def order_item(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        order = self.orders.get(int(req.query.get("id", "0")))
        return Response(404, "Not found") if order is None else Response(200, order)

    @route("GET", r"/v1/command/list")
    def command_list(self, req: Request) -> Response:
        gate = self._gate(req)
        return gate if gate is not None else Response(200, list(self.commands))

    @route("GET", r"/v1/command/deps")
    def command_deps(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        oid = int(req.query.get("masterid", "0"))
        return Response(200, [c for c in self.commands if c["orderId"] == oid])

    @route("GET", r"/v1/commandReport/deps")
    def command_report_deps(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        cid = int(req.query.get("masterid", "0"))
        return Response(200, [r for r in self.command_reports if r["commandId"] == cid])

    @route("GET", r"/v1/orderVersion/deps")
    def order_version_deps(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        v = self.versions.get(int(req.query.get("masterid", "0")))
        return Response(200, [v] if v else [])

    @route("GET", r"/v1/fill/deps")
    def fill_deps(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        oid = int(req.query.get("masterid", "0"))
        return Response(200, [f for f in self.fills if f["orderId"] == oid])

    @route("GET", r"/v1/fill/list")
    def fill_list(self, req: Request) -> Response:
        gate = self._gate(req)
        return gate if gate is not None else Response(200, list(self.fills))

    # ================================================================ orders
    def _order_fault(self, req: Request) -> tuple[Response | None, bool, bool]:
        """(immediate response, answer late, answer 500 after executing)."""
        fault = self.faults.take(req, kinds=("reject", "server_error", "timeout_after_accept"))
        if fault is None:
            return None, False, False
        if fault.kind == "reject":
            reason = str(fault.params["reason"])
            if reason in FAILURE_REASONS:
                return Response(200, {"failureReason": reason, "failureText": ""}), False, False
            return Response(200, {"failureReason": "UnknownReason",
                                  "failureText": reason}), False, False
        if fault.kind == "server_error":
            if fault.params.get("accepted"):
                return None, False, True
            return Response(500, "Internal Server Error"), False, False
        return None, True, False

    def _finish(self, payload: dict[str, Any], late: bool, error_after: bool) -> Response:
        if error_after:
            return Response(500, "Internal Server Error")
        return Response(200, payload, delay=self.timeout_delay if late else 0.0)

    @route("POST", r"/v1/order/placeorder")
    def place_order(self, req: Request) -> Response:
        return self._place(req, oso=False)

    @route("POST", r"/v1/order/placeoso")
    def place_oso(self, req: Request) -> Response:
        return self._place(req, oso=True)

    def _place(self, req: Request, *, oso: bool) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        body = req.json() or {}
        problem = self._validate(body, ("action", "symbol", "orderQty", "orderType"))
        if oso and problem is None:
            if not isinstance(body.get("bracket1"), dict):
                problem = "bracket1 is required"
            else:
                for b in (body.get("bracket1"), body.get("bracket2")):
                    if b is not None:
                        problem = problem or self._validate(b, ("action", "orderType"))
        if problem:
            return Response(400, problem)
        immediate, late, error_after = self._order_fault(req)
        if immediate is not None:
            return immediate
        acct = self._account_for(body)
        if acct is None:
            return Response(200, {"failureReason": "Unauthorized",
                                  "failureText": "Access is denied"})
        contract = self._contract_by_name(body["symbol"])
        if contract is None:
            return Response(200, {"failureReason": "InvalidContract",
                                  "failureText": f"Unknown symbol {body['symbol']}"})
        if body["orderType"] == "Market" and contract.price is None:
            return Response(200, {"failureReason": "NoQuote", "failureText": ""})
        risk = self.faults.take(req, kinds=("reject_after_accept",))
        if risk is not None:
            order = self._new_order(acct, contract, body, status="Rejected")
            command = next(c for c in self.commands if c["orderId"] == order["id"])
            command["commandStatus"] = "RiskRejected"
            self.command_reports.append({
                "id": next(self._ids), "commandId": command["id"],
                "timestamp": _iso(self._now()), "commandStatus": "RiskRejected",
                "rejectReason": risk.params["reason"], "text": risk.params["text"],
                "ordStatus": "Rejected"})
            return self._finish({"orderId": order["id"]}, late, error_after)
        entry = self._new_order(acct, contract, body)
        payload: dict[str, Any] = {"orderId": entry["id"]}
        if oso:
            oco_id = next(self._ids)
            for i, key in enumerate(("bracket1", "bracket2"), start=1):
                bracket = body.get(key)
                if bracket is None:
                    continue
                leg = self._new_order(acct, contract,
                                      {**bracket, "orderQty": body["orderQty"]},
                                      status="Suspended", parent_id=entry["id"])
                leg["ocoId"] = oco_id
                payload[f"oso{i}Id"] = leg["id"]
            if entry["ordStatus"] == "Filled":
                self._release_brackets(entry["id"])
        self._match_working(contract)
        return self._finish(payload, late, error_after)

    @staticmethod
    def _validate(body: dict[str, Any], required: tuple[str, ...]) -> str | None:
        missing = [k for k in required if k not in body]
        if missing:
            return f"missing fields: {missing}"
        if body["action"] not in ("Buy", "Sell"):
            return f"invalid action {body['action']!r}"
        if body["orderType"] not in _ORDER_TYPES:
            return f"invalid orderType {body['orderType']!r}"
        qty = body.get("orderQty", 1)
        if not isinstance(qty, int) or isinstance(qty, bool) or qty <= 0:
            return f"orderQty must be a positive integer, got {qty!r}"
        if body["orderType"] in ("Limit", "StopLimit") and body.get("price") is None:
            return "price is required for Limit orders"
        if body["orderType"] in ("Stop", "StopLimit") and body.get("stopPrice") is None:
            return "stopPrice is required for Stop orders"
        return None

    def _new_order(self, acct: _Account, contract: _Contract, body: dict[str, Any], *,
                   status: str = "Working", parent_id: int | None = None,
                   cl_ord_id: str | None = None) -> dict[str, Any]:
        now = _iso(self._now())
        oid = next(self._ids)
        order = {"id": oid, "accountId": acct.id, "contractId": contract.id, "timestamp": now,
                 "action": body["action"], "ordStatus": status, "executionProviderId": 1,
                 "parentId": parent_id, "admin": False}
        self.orders[oid] = order
        self.versions[oid] = {
            "id": next(self._ids), "orderId": oid, "orderQty": body["orderQty"],
            "orderType": body["orderType"], "price": body.get("price"),
            "stopPrice": body.get("stopPrice"), "timeInForce": body.get("timeInForce", "Day"),
            "text": body.get("text"),
        }
        self.commands.append({
            "id": next(self._ids), "orderId": oid, "timestamp": now,
            "clOrdId": body.get("clOrdId", cl_ord_id), "commandType": "New",
            "commandStatus": "AtExecution", "isAutomated": bool(body.get("isAutomated")),
            "customTag50": body.get("customTag50"),
        })
        if status == "Working" and body["orderType"] == "Market":
            if self.fill_steps is not None and parent_id is None:
                order["steps"] = list(self.fill_steps)
            else:
                self._fill(order, contract.price)
        return order

    def _filled(self, order_id: int) -> int:
        return sum(int(f["qty"]) for f in self.fills if f["orderId"] == order_id)

    def _next_step(self, order: dict[str, Any]) -> None:
        """A stepped market order gets its next fill, at the current price."""
        steps = order.get("steps")
        price = self.contracts[order["contractId"]].price
        if not steps or order["ordStatus"] != "Working" or price is None:
            return
        total = int(self.versions[order["id"]]["orderQty"])
        remaining = total - self._filled(order["id"])
        part = max(1, round(steps.pop(0) * total))
        self._fill(order, price, remaining if not steps else min(remaining, part))

    def _fill(self, order: dict[str, Any], price: float, qty: int | None = None) -> None:
        """Execute `qty` contracts of `order` (default: all that is left) at `price`."""
        version = self.versions[order["id"]]
        left = int(version["orderQty"]) - self._filled(order["id"])
        qty = left if qty is None else qty
        contract = self.contracts[order["contractId"]]
        acct = next(a for a in self.accounts if a.id == order["accountId"])
        now = self._now()
        self.fills.append({
            "id": next(self._ids), "orderId": order["id"], "contractId": contract.id,
            "timestamp": _iso(now),
            "tradeDate": {"year": now.year, "month": now.month, "day": now.day},
            "action": order["action"], "qty": qty, "price": price, "active": True,
            "finallyPaired": 0,
        })
        done = qty >= left
        if done:
            order["ordStatus"] = "Filled"  # a partly filled order stays Working
        key = (acct.id, contract.id)
        pos = self.positions.get(key) or {
            "id": next(self._ids), "accountId": acct.id, "contractId": contract.id,
            "timestamp": _iso(now),
            "tradeDate": {"year": now.year, "month": now.month, "day": now.day},
            "netPos": 0, "netPrice": None, "bought": 0, "boughtValue": 0.0, "sold": 0,
            "soldValue": 0.0, "prevPos": 0, "prevPrice": None,
        }
        signed = qty if order["action"] == "Buy" else -qty
        old = pos["netPos"]
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):  # opening or adding
            pos["netPrice"] = ((pos["netPrice"] or 0.0) * abs(old) + price * qty) / abs(new)
        else:  # reducing, possibly flipping
            closed = min(abs(old), qty)
            pnl = (price - pos["netPrice"]) * closed * (1 if old > 0 else -1)
            acct.cash += pnl * contract.point_value
            acct.realized += pnl * contract.point_value
            if new == 0:
                pos["netPrice"] = None
            elif (new > 0) != (old > 0):
                pos["netPrice"] = price
        pos["netPos"] = new
        if signed > 0:
            pos["bought"] += qty
            pos["boughtValue"] += qty * price
        else:
            pos["sold"] += qty
            pos["soldValue"] += qty * price
        pos["timestamp"] = _iso(now)
        self.positions[key] = pos
        if new == 0:  # a flat position cancels nothing by itself, but brackets are done
            self._cancel_children_of_flat(contract.id, acct.id)
        if done:
            self._release_brackets(order["id"])

    def _release_brackets(self, parent_id: int) -> None:
        for o in self.orders.values():
            if o.get("parentId") == parent_id and o["ordStatus"] == "Suspended":
                o["ordStatus"] = "Working"

    def _cancel_children_of_flat(self, contract_id: int, account_id: int) -> None:
        for o in self.orders.values():
            if (o["contractId"] == contract_id and o["accountId"] == account_id
                    and o.get("ocoId") and o["ordStatus"] in ("Working", "Suspended")):
                o["ordStatus"] = "Canceled"

    def _match_working(self, contract: _Contract, market_move: bool = False) -> None:
        price = contract.price
        if price is None:
            return
        for order in list(self.orders.values()):
            if order["contractId"] != contract.id or order["ordStatus"] != "Working":
                continue
            if order.get("steps"):
                if market_move:
                    self._next_step(order)
                continue
            v = self.versions[order["id"]]
            buy = order["action"] == "Buy"
            hit = False
            if v["orderType"] == "Limit":
                hit = price <= v["price"] if buy else price >= v["price"]
            elif v["orderType"] == "Stop":
                hit = price >= v["stopPrice"] if buy else price <= v["stopPrice"]
            if not hit:
                continue
            oco = order.get("ocoId")
            self._fill(order, price if v["orderType"] == "Stop" else v["price"])
            if oco:
                for other in self.orders.values():
                    if other.get("ocoId") == oco and other["ordStatus"] in ("Working",
                                                                             "Suspended"):
                        other["ordStatus"] = "Canceled"

    @route("POST", r"/v1/order/liquidateposition")
    def liquidate_position(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        body = req.json() or {}
        if "accountId" not in body or "contractId" not in body:
            return Response(400, "accountId and contractId are required")
        immediate, late, error_after = self._order_fault(req)
        if immediate is not None:
            return immediate
        acct = next((a for a in self.accounts if a.id == body["accountId"]), None)
        contract = self.contracts.get(body["contractId"])
        if acct is None or contract is None:
            return Response(404, "Not found")
        for o in self.orders.values():  # liquidation cancels working orders on the contract
            if (o["contractId"] == contract.id and o["accountId"] == acct.id
                    and o["ordStatus"] in ("Working", "Suspended")):
                o["ordStatus"] = "Canceled"
        pos = self.positions.get((acct.id, contract.id))
        if not pos or pos["netPos"] == 0:
            return Response(200, {"failureReason": "UnknownReason",
                                  "failureText": "No position to liquidate"})
        if contract.price is None:
            return Response(200, {"failureReason": "NoQuote", "failureText": ""})
        order = self._new_order(acct, contract, {
            "action": "Sell" if pos["netPos"] > 0 else "Buy", "orderQty": abs(pos["netPos"]),
            "orderType": "Market", "isAutomated": body.get("isAutomated", False),
            "customTag50": body.get("customTag50"),
        })
        return self._finish({"orderId": order["id"]}, late, error_after)

    @route("POST", r"/v1/order/cancelorder")
    def cancel_order(self, req: Request) -> Response:
        gate = self._gate(req)
        if gate is not None:
            return gate
        body = req.json() or {}
        order = self.orders.get(body.get("orderId", 0))
        if order is None:
            return Response(404, "Not found")
        if order["ordStatus"] not in ("Working", "Suspended"):
            return Response(200, {"failureReason": "TooLate",
                                  "failureText": f"Order is {order['ordStatus']}"})
        order["ordStatus"] = "Canceled"
        cmd_id = next(self._ids)
        self.commands.append({
            "id": cmd_id, "orderId": order["id"], "timestamp": _iso(self._now()),
            "clOrdId": body.get("clOrdId"), "commandType": "Cancel",
            "commandStatus": "AtExecution", "isAutomated": bool(body.get("isAutomated")),
        })
        return Response(200, {"commandId": cmd_id})


def make_broker(fake: TradovateFake, **overrides: Any) -> TradovateBroker:
    """A TradovateBroker pointed at `fake`, on the fake's clock (never sleeps for real)."""
    kw: dict[str, Any] = {
        "username": FAKE_USERNAME, "password": FAKE_PASSWORD, "app_id": FAKE_APP_ID,
        "app_version": FAKE_APP_VERSION, "cid": FAKE_CID, "sec": FAKE_SEC,
        "base_url": f"{fake.url}/v1", "timeout": 0.5,
        "clock": fake.clock.now, "sleep": fake.clock.sleep,
    }
    kw.update(overrides)
    return TradovateBroker(**kw)


@contextmanager
def make_tradovate_under_test(**overrides: Any) -> Iterator[tuple[TradovateBroker, TradovateFake]]:
    """(broker, fake) for tests: a running fake and a broker logged in to nothing yet."""
    fake = TradovateFake()
    with fake:
        broker = make_broker(fake, **overrides)
        fake.timeout_delay = float(broker.timeout) + 1.5
        try:
            yield broker, fake
        finally:
            broker.close()
