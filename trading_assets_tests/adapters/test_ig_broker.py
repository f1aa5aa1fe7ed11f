"""IGBroker through the real trading-ig library against the loopback IG fake.

Each scripted fault of `FakeIG` is driven here and the test checks what a user relies on:
one deal per client order id, typed errors, sessions that heal themselves.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from trading_assets.adapters.ig.broker import IGBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import account_key, client_order_id, execute_plan
from trading_assets.core.ports import (
    AmbiguousOrderError,
    Broker,
    BrokerError,
    OrderIntent,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    RateLimited,
    SessionExpired,
    Side,
)
from trading_assets_tests.fakes.ig import FakeIG, make_ig_under_test

EPIC = "CS.D.EURUSD.MINI.IP"


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG().start()
    server.set_price(EPIC, 1.1000, spread=0.0002)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def broker(fake: FakeIG, sleeps: Sleeps) -> IGBroker:
    return IGBroker(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                    timeout=0.5, sleep=sleeps)


def buy(cid: str, qty: float = 1.0, **kw: object) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=EPIC, side=Side.BUY, qty=qty, **kw)


def order_posts(fake: FakeIG) -> list[dict]:
    return [r.json() for r in fake.requests
            if r.path.endswith("/positions/otc") and r.method == "POST"]


def test_satisfies_the_broker_protocol(broker: IGBroker) -> None:
    assert isinstance(broker, Broker)


def test_constructing_does_not_log_in(fake: FakeIG, broker: IGBroker) -> None:
    assert fake.logins == 0 and fake.requests == []


def test_account_comes_from_the_ig_account_balance(broker: IGBroker, fake: FakeIG) -> None:
    acct = broker.account()
    assert (acct.account_id, acct.cash, acct.equity, acct.currency) == (
        "ABC123", 10_000.0, 10_000.0, "GBP")
    assert fake.logins == 1


def test_market_buy_fills_at_the_offer_and_shows_as_a_long_position(
        broker: IGBroker, fake: FakeIG) -> None:
    order = broker.submit_order(buy("fib-EURUSD-20240102T10-entry", qty=2))
    assert order.status is OrderStatus.FILLED
    assert order.filled_qty == 2 and order.filled_avg_price == pytest.approx(1.1001)
    assert order.client_order_id == "fib-EURUSD-20240102T10-entry"
    assert order.broker_order_id.startswith("DI")
    [pos] = broker.positions()
    assert (pos.symbol, pos.qty) == (EPIC, 2.0)
    assert pos.avg_entry_price == pytest.approx(1.1001)
    assert pos.market_price == pytest.approx(1.1)


def test_order_post_is_what_ig_expects(broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(buy("wire-1"))
    [req] = [r for r in fake.requests if r.path.endswith("/positions/otc")]
    assert req.headers["version"] == "2"
    body = req.json()
    assert body["dealReference"] == "wire-1"
    assert body["orderType"] == "MARKET" and body["level"] is None
    assert body["currencyCode"] == "GBP" and body["expiry"] == "-"
    assert {"currencyCode", "direction", "epic", "expiry", "forceOpen", "guaranteedStop",
            "level", "limitDistance", "limitLevel", "orderType", "quoteId", "size",
            "stopDistance", "stopLevel", "trailingStop", "trailingStopIncrement"} <= set(body)


def test_resubmitting_a_client_order_id_never_places_a_second_deal(
        broker: IGBroker, fake: FakeIG) -> None:
    first = broker.submit_order(buy("dup-1"))
    again = broker.submit_order(buy("dup-1"))
    assert again == first
    assert fake.order_count("dup-1") == 1
    assert len(order_posts(fake)) == 1


def test_the_fake_itself_would_accept_a_reused_reference(
        broker: IGBroker, fake: FakeIG) -> None:
    """Why the client must check first: IG does not refuse a reused dealReference, so two
    raw POSTs (bypassing the broker's lookup) make two deals."""
    body = {"currencyCode": "GBP", "direction": "BUY", "epic": EPIC, "expiry": "-",
            "forceOpen": True, "guaranteedStop": False, "level": None, "limitDistance": None,
            "limitLevel": None, "orderType": "MARKET", "quoteId": None, "size": 1,
            "stopDistance": None, "stopLevel": None, "trailingStop": False,
            "trailingStopIncrement": None, "dealReference": "raw-1"}
    for _ in range(2):
        assert broker.conn.request("create", "/positions/otc", body, "2").status_code == 200
    assert fake.order_count("raw-1") == 2


@pytest.mark.parametrize("cid", ["", "a" * 31, "has space", "semi;colon", "dot.ted"])
def test_client_ids_ig_cannot_carry_are_refused_before_any_request(
        broker: IGBroker, fake: FakeIG, cid: str) -> None:
    with pytest.raises(ValueError, match="dealReference"):
        broker.submit_order(buy(cid))
    assert order_posts(fake) == []
    assert broker.get_order(cid) is None


def test_take_profit_and_stop_loss_levels_are_attached(broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(buy("tp-sl", take_profit=1.12, stop_loss=1.09))
    [body] = order_posts(fake)
    assert (body["limitLevel"], body["stopLevel"], body["forceOpen"]) == (1.12, 1.09, True)
    [deal] = fake.state.deals
    assert (deal.limit_level, deal.stop_level) == (1.12, 1.09)


def test_distances_are_an_ig_option(broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(buy("dist"), limit_distance=0.002, stop_distance=0.001)
    [body] = order_posts(fake)
    assert (body["limitDistance"], body["stopDistance"]) == (0.002, 0.001)
    assert body["limitLevel"] is None and body["stopLevel"] is None
    [deal] = fake.state.deals
    assert deal.limit_level == pytest.approx(1.1021)
    assert deal.stop_level == pytest.approx(1.0991)


def test_level_and_distance_together_is_a_caller_error(broker: IGBroker, fake: FakeIG) -> None:
    with pytest.raises(ValueError):
        broker.submit_order(buy("both", take_profit=1.2), limit_distance=0.01)
    assert order_posts(fake) == []


def test_reject_inside_http_200_raises_order_rejected_with_igs_reason(
        broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_reject_next("MARKET_CLOSED_WITH_EDITS")
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("rej-1"))
    assert info.value.reason == "MARKET_CLOSED_WITH_EDITS"
    assert broker.positions() == []
    order = broker.get_order("rej-1")
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.reason == "MARKET_CLOSED_WITH_EDITS"
    # Resubmitting the same id reports the same verdict and sends nothing new.
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("rej-1"))
    assert len(order_posts(fake)) == 1


def test_outside_market_hours_a_deal_is_recorded_rejected_with_igs_reason(
        broker: IGBroker, fake: FakeIG, tmp_path) -> None:
    """IG does not hold a market deal for the open: outside its hours the deal POST is
    answered 200 and the confirmation is REJECTED (MARKET_CLOSED_WITH_EDITS). Through
    execute_plan: the intent is `rejected` with IG's reason, no position, and a rerun of
    the tick sends nothing; once the market trades again the next tick fills."""
    fake.set_market_status(EPIC, "EDITS_ONLY")
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    account = account_key(broker, broker.account().account_id)

    def plan(key: str) -> list[OrderIntent]:
        cid = client_order_id("ema_concentration", EPIC, key, "entry")
        return [OrderIntent(cid, "ema_concentration", key, account, EPIC, Side.BUY, 1, "entry", 1.1)]

    closed = "2025-11-28-22:00"
    report = execute_plan(broker, ledger, plan(closed), "ema_concentration", closed)
    [intent] = ledger.intents("ema_concentration", closed)
    assert (intent.status, intent.reason) == ("rejected", "MARKET_CLOSED_WITH_EDITS")
    assert report.rejected == [intent.client_order_id] and broker.positions() == []
    execute_plan(broker, ledger, plan(closed), "ema_concentration", closed)
    assert len(order_posts(fake)) == 1

    fake.set_market_status(EPIC, "TRADEABLE")
    reopened = "2025-12-01-08:00"
    execute_plan(broker, ledger, plan(reopened), "ema_concentration", reopened)
    assert ledger.intents("ema_concentration", reopened)[0].status == "filled"
    assert [(p.symbol, p.qty) for p in broker.positions()] == [(EPIC, 1.0)]


def test_a_closing_deal_offline_is_refused_and_the_position_stays(broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(buy("open-1", qty=2))
    fake.set_market_status(EPIC, "OFFLINE")
    with pytest.raises(OrderRejected) as info:
        broker.close_position(EPIC, "close-1")
    assert info.value.reason == "MARKET_OFFLINE"
    assert [(p.symbol, p.qty) for p in broker.positions()] == [(EPIC, 2.0)]


def test_insufficient_funds_is_a_reject(broker: IGBroker) -> None:
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("too-big", qty=1_000_000))
    assert info.value.reason == "INSUFFICIENT_FUNDS"


def test_unknown_epic_is_a_reject(broker: IGBroker) -> None:
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(OrderRequest("unk", "CS.D.NOPE.MINI.IP", Side.BUY, 1))
    assert "epic.unavailable" in str(info.value.reason)


def test_limit_deal_worse_than_the_market_is_rejected(broker: IGBroker, fake: FakeIG) -> None:
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("lim-1", order_type="limit", limit_price=1.0))
    assert info.value.reason == "LEVEL_TOLERANCE_ERROR"
    order = broker.submit_order(buy("lim-2", order_type="limit", limit_price=1.2))
    assert order.status is OrderStatus.FILLED
    assert order_posts(fake)[-1]["orderType"] == "LIMIT"


def test_stop_entries_and_non_positive_sizes_are_refused(broker: IGBroker, fake: FakeIG) -> None:
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("stop-1", order_type="stop", stop_price=1.2))
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("zero", qty=0))
    assert order_posts(fake) == []


def test_timeout_after_accept_returns_the_accepted_deal(broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_timeout_after_accept()
    order = broker.submit_order(buy("slow-1"))
    assert order.status is OrderStatus.FILLED
    assert fake.order_count("slow-1") == 1
    assert broker.submit_order(buy("slow-1")) == order
    assert fake.order_count("slow-1") == 1


def test_server_error_before_accept_is_ambiguous_then_resolves_once(
        broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_server_error(accept=False)
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("5xx-1"))
    assert fake.order_count("5xx-1") == 0
    assert broker.get_order("5xx-1") is None
    order = broker.submit_order(buy("5xx-1"))  # the caller's resolution: not there, place it
    assert order.status is OrderStatus.FILLED
    assert fake.order_count("5xx-1") == 1


def test_server_error_after_accept_returns_the_deal(broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_server_error(accept=True)
    order = broker.submit_order(buy("5xx-2"))
    assert order.status is OrderStatus.FILLED
    assert fake.order_count("5xx-2") == 1


def test_non_json_answer_to_an_order_is_resolved_by_lookup(
        broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_non_json(accept=True)
    assert broker.submit_order(buy("html-1")).status is OrderStatus.FILLED
    fake.fault_non_json(accept=False)
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("html-2"))
    assert fake.order_count("html-1") == 1 and fake.order_count("html-2") == 0


def test_a_late_confirmation_is_polled_for(broker: IGBroker, fake: FakeIG,
                                           sleeps: Sleeps) -> None:
    broker.positions()
    fake.fault_confirm_lag(times=3)  # the pre-check 404 consumes one, polling the rest
    order = broker.submit_order(buy("lag-1"))
    assert order.status is OrderStatus.FILLED
    assert sleeps, "the broker should have waited between confirmation polls"
    assert fake.order_count("lag-1") == 1


def test_expired_session_on_a_read_logs_in_again(broker: IGBroker, fake: FakeIG) -> None:
    broker.account()
    fake.fault_expire_session()
    assert broker.positions() == []
    assert fake.logins == 2


def test_expired_session_on_an_order_post_rechecks_then_places_once(
        broker: IGBroker, fake: FakeIG) -> None:
    broker.account()
    # Expire between the pre-check and the POST: the POST is the first call to see 401.
    real_find = broker._find

    def find_then_expire(ref: str):
        found = real_find(ref)
        fake.fault_expire_session()
        broker._find = real_find  # only once
        return found

    broker._find = find_then_expire  # type: ignore[method-assign]
    order = broker.submit_order(buy("exp-1"))
    assert order.status is OrderStatus.FILLED
    assert fake.order_count("exp-1") == 1
    assert fake.logins == 2
    statuses = [r for r in fake.requests if r.path.endswith("/positions/otc")]
    assert len(statuses) == 2  # one refused with 401, one accepted


def test_wrong_credentials_are_session_expired(fake: FakeIG) -> None:
    bad = IGBroker(fake.username, "wrong", fake.api_key, base_url=fake.base_url, timeout=0.5)
    with pytest.raises(SessionExpired, match="invalid-details"):
        bad.positions()


def test_allowance_403s_are_waited_out(broker: IGBroker, fake: FakeIG, sleeps: Sleeps) -> None:
    broker.account()
    fake.fault_rate_limit(times=2)
    assert broker.positions() == []
    assert sleeps == [1.0, 2.0]


def test_order_post_rate_limited_is_retried_without_a_duplicate(
        broker: IGBroker, fake: FakeIG, sleeps: Sleeps) -> None:
    broker.positions()
    # Two 403s: the pre-check GET /confirms takes one, the order POST (trading) the other.
    fake.fault_rate_limit(times=2)
    assert broker.submit_order(buy("rl-1")).status is OrderStatus.FILLED
    assert fake.order_count("rl-1") == 1
    assert len(sleeps) == 2


def test_persistent_allowance_403s_raise_rate_limited(
        broker: IGBroker, fake: FakeIG, sleeps: Sleeps) -> None:
    broker.account()
    fake.fault_rate_limit(times=50)
    with pytest.raises(RateLimited) as info:
        broker.positions()
    assert info.value.retry_after == 60.0
    assert sum(sleeps) <= 20.0


def test_close_position_nets_to_flat_and_books_the_profit(
        broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(buy("open-1", qty=2))
    fake.set_price(EPIC, 1.2000, spread=0.0002)
    closed = broker.close_position(EPIC, "close-1")
    assert closed is not None and closed.side is Side.SELL and closed.qty == 2
    assert closed.filled_avg_price == pytest.approx(1.1999)
    assert broker.positions() == []
    assert broker.account().cash == pytest.approx(10_000 + 2 * (1.1999 - 1.1001))
    # Idempotent: the same close id returns the same deal, even after a new position.
    broker.submit_order(buy("open-2", qty=1))
    assert broker.close_position(EPIC, "close-1") == closed
    assert [p.qty for p in broker.positions()] == [1.0]
    assert fake.order_count("close-1") == 1


def test_close_position_of_a_short_buys_back(broker: IGBroker) -> None:
    broker.submit_order(OrderRequest("short-1", EPIC, Side.SELL, 3))
    assert [p.qty for p in broker.positions()] == [-3.0]
    closed = broker.close_position(EPIC, "close-s")
    assert closed is not None and closed.side is Side.BUY
    assert broker.positions() == []


def test_close_position_when_flat_is_none(broker: IGBroker, fake: FakeIG) -> None:
    assert broker.close_position(EPIC, "close-flat") is None
    assert order_posts(fake) == []


def test_get_order_survives_expired_confirmations(broker: IGBroker, fake: FakeIG) -> None:
    placed = broker.submit_order(buy("old-1"))
    fake.state.confirms.clear()  # IG keeps confirmations only briefly
    found = broker.get_order("old-1")
    assert found is not None and found.broker_order_id == placed.broker_order_id
    assert found.status is OrderStatus.FILLED
    assert broker.submit_order(buy("old-1")).broker_order_id == placed.broker_order_id
    assert fake.order_count("old-1") == 1


def test_get_and_cancel_unknown_order_is_none(broker: IGBroker) -> None:
    assert broker.get_order("never-seen") is None
    assert broker.cancel_order("never-seen") is None


def test_cancel_of_a_filled_deal_returns_it_unchanged(broker: IGBroker) -> None:
    placed = broker.submit_order(buy("cx-1"))
    assert broker.cancel_order("cx-1") == placed


def test_secrets_never_reach_the_logs(fake: FakeIG, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    b = IGBroker(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                 timeout=0.5, sleep=lambda _s: None)
    b.submit_order(buy("log-1"))
    fake.fault_expire_session()
    fake.fault_server_error()
    with pytest.raises(AmbiguousOrderError):
        b.submit_order(buy("log-2"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text, "expected some log output to inspect"
    for secret in (fake.password, fake.api_key, "cst-", "xst-"):
        assert secret not in text


def test_contract_factory_yields_a_working_pair() -> None:
    with make_ig_under_test() as (b, f):
        f.set_price(EPIC, 1.3)
        order = b.submit_order(buy("factory-1"))
        assert order.filled_avg_price == pytest.approx(1.3)
        assert f.order_count() == 1
        f.fault_rate_limit(times=5)
        with pytest.raises(RateLimited):
            b.positions()


def test_acc_number_switches_the_session_to_that_account(fake: FakeIG) -> None:
    fake.account_ids = ["ABC123", "XYZ789"]
    b = IGBroker(fake.username, fake.password, fake.api_key, acc_number="XYZ789",
                 base_url=fake.base_url, timeout=0.5, sleep=lambda _s: None)
    assert b.account().account_id == "XYZ789"
    assert any(r.method == "PUT" and r.path.endswith("/session") for r in fake.requests)
    fake.fault_expire_session()  # a new login lands on the default account again...
    b.submit_order(buy("acct-1"))
    assert fake.account_id == "XYZ789"  # ...and is switched back before the order


def test_unknown_acc_number_fails_loudly(fake: FakeIG) -> None:
    b = IGBroker(fake.username, fake.password, fake.api_key, acc_number="NOPE",
                 base_url=fake.base_url, timeout=0.5)
    with pytest.raises(SessionExpired, match="NOPE"):
        b.positions()
    assert order_posts(fake) == []


def test_confirmation_lookup_failing_after_accept_is_ambiguous(
        broker: IGBroker, fake: FakeIG) -> None:
    broker.positions()
    real_await = broker._await_confirm

    def broken(ref: str):
        fake.fault_rate_limit(times=50)
        return real_await(ref)

    broker._await_confirm = broken  # type: ignore[method-assign]
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("seen-not-confirmed"))
    assert fake.order_count("seen-not-confirmed") == 1


def test_kyc_refusal_on_an_order_is_a_clear_error_not_an_ambiguity(
        broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_error(403, "error.public-api.failure.kyc.required",
                     path=r"/positions/otc$", method="POST")
    with pytest.raises(BrokerError) as info:
        broker.submit_order(buy("kyc-1"))
    assert not isinstance(info.value, AmbiguousOrderError)
    assert info.value.reason == "error.public-api.failure.kyc.required"
    assert fake.order_count() == 0


# ----------------------------------------------------------------------------- one session


@pytest.fixture
def own_login_fake() -> Iterator[FakeIG]:
    """A fake whose password no other test uses: the shared sessions live per process."""
    server = FakeIG(password=f"pw-{uuid.uuid4().hex[:12]}").start()
    server.set_price(EPIC, 1.1000, spread=0.0002)
    try:
        yield server
    finally:
        server.stop()


def _login(fake: FakeIG, **changes: object) -> dict[str, object]:
    return {"username": fake.username, "password": fake.password, "api_key": fake.api_key,
            "base_url": fake.base_url, "timeout": 0.5, **changes}


def test_broker_and_prices_of_one_login_share_one_ig_session(own_login_fake: FakeIG) -> None:
    """Every step of a run builds its broker and its price history from the resources:
    they log in once per process, use that session for every call, and renew it once
    when IG expires it (IG counts logins and limits calls per account)."""
    from trading_assets.resources.brokers import IGBrokerResource
    from trading_assets.resources.market_data import IGPricesResource

    fake = own_login_fake
    first, second = IGBrokerResource(**_login(fake)).get(), IGBrokerResource(**_login(fake)).get()
    prices = IGPricesResource(**_login(fake)).get()
    prices.page_wait = 0  # type: ignore[attr-defined]
    end = datetime.now(UTC)

    def bars() -> int:
        return len(prices.get_bars([EPIC], end - timedelta(hours=5), end, "1h"))

    assert first.account().account_id == "ABC123"
    assert second.submit_order(buy("shared-1")).status is OrderStatus.FILLED
    assert bars() > 0
    assert fake.logins == 1
    fake.fault_expire_session()
    assert [p.qty for p in first.positions()] == [1.0]
    assert bars() > 0 and second.account().account_id == "ABC123"
    assert fake.logins == 2


def test_a_different_login_never_gets_anothers_session(own_login_fake: FakeIG) -> None:
    from trading_assets.resources.brokers import IGBrokerResource

    fake = own_login_fake
    IGBrokerResource(**_login(fake)).get().account()
    seen = len(fake.requests)
    wrong = IGBrokerResource(**_login(fake, password="not-the-password")).get()
    with pytest.raises(SessionExpired, match="invalid-details"):
        wrong.positions()
    # Its only request was its own (refused) login: no call went out with the session.
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in fake.requests[seen:]] == [
        ("POST", "session")]
    assert fake.logins == 1


def test_a_read_that_meets_a_5xx_is_asked_again_with_backoff(broker: IGBroker, fake: FakeIG,
                                                              sleeps: Sleeps) -> None:
    broker.submit_order(buy("READ-RETRY-1"))
    fake.requests.clear()
    sleeps.clear()
    fake.fault_error(503, "error.service.unavailable", path=r"/positions$", method="GET", times=2)
    [position] = broker.positions()
    assert position.qty == 1.0
    reads = [r for r in fake.requests if r.path.endswith("/positions") and r.method == "GET"]
    assert len(reads) == 3 and sleeps == [0.5, 1.0]


def test_a_read_that_keeps_failing_gives_up_with_igs_answer(broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_error(503, "error.service.unavailable", path=r"/accounts$", method="GET", times=5)
    with pytest.raises(BrokerError, match="503"):
        broker.account()
    assert sum(r.path.endswith("/accounts") for r in fake.requests) == 3


def test_an_order_post_meeting_a_5xx_is_never_resent_blindly(broker: IGBroker, fake: FakeIG) -> None:
    fake.fault_server_error(accept=False)
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("POST-NO-RETRY"))
    assert len(order_posts(fake)) == 1 and fake.order_count() == 0
