"""TradovateBroker against the loopback Tradovate fake: what goes over the wire, and how
the broker behaves when Tradovate does its awkward things (errors inside HTTP 200,
penalty tickets, lockouts, expiring tokens, no clOrdId deduplication)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.adapters.tradovate import broker as tradovate_broker
from trading_assets.adapters.tradovate.broker import TradovateBroker
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
from trading_assets_tests.fakes.tradovate import (
    BAD_LOGIN_TEXT,
    FAKE_PASSWORD,
    FAKE_SEC,
    make_broker,
    make_tradovate_under_test,
)


def buy(coid: str, qty: float = 1, **kw: object) -> OrderRequest:
    return OrderRequest(client_order_id=coid, symbol="MESZ6", side=Side.BUY, qty=qty, **kw)


def paths(fake, suffix: str) -> int:
    return sum(1 for r in fake.requests if r.path.endswith(suffix))


@pytest.fixture
def tv():
    with make_tradovate_under_test() as pair:
        yield pair


# ----------------------------------------------------------------------------- session


def test_is_a_broker_and_logs_in_with_the_documented_body(tv) -> None:
    broker, fake = tv
    assert isinstance(broker, Broker)
    assert broker.account().account_id == "DEMO700123"
    (login,) = fake.bodies("/auth/accesstokenrequest")
    assert set(login) == {"name", "password", "appId", "appVersion", "cid", "sec"}
    assert login["cid"] == 8
    later = [r for r in fake.requests if not r.path.startswith("/v1/auth/")]
    assert later and all(r.headers["authorization"].startswith("Bearer ") for r in later)


def test_device_id_is_sent_when_configured() -> None:
    with make_tradovate_under_test(device_id="dev-123") as (broker, fake):
        broker.positions()
        assert fake.bodies("/auth/accesstokenrequest")[0]["deviceId"] == "dev-123"


def test_failed_login_is_session_expired_with_the_servers_text_and_no_secret() -> None:
    with (make_tradovate_under_test(password="wrong-password-123") as (broker, _fake),
          pytest.raises(SessionExpired) as info):
        broker.account()
    err = info.value
    assert err.reason == BAD_LOGIN_TEXT
    assert BAD_LOGIN_TEXT in str(err)
    blob = f"{err} {err.args} {err.reason} {broker!r}"
    assert "wrong-password-123" not in blob and FAKE_SEC not in blob


def test_token_is_renewed_before_expiration_time_without_a_new_login(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.clock.advance(75 * 60)  # 80-minute tokens; renewal window is the last 10 minutes
    broker.positions()
    assert (fake.login_count(), fake.renew_count()) == (1, 1)
    fake.clock.advance(70 * 60)  # the renewed token is good for 80 minutes from renewal
    broker.positions()
    assert (fake.login_count(), fake.renew_count()) == (1, 2)


def test_token_past_expiration_logs_in_again(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.clock.advance(81 * 60)
    assert broker.positions() == []
    assert paths(fake, "/auth/accesstokenrequest") == 2


def test_401_logs_in_again_without_renewing_the_refused_token(tv) -> None:
    """A token the server just refused cannot be renewed (renewal needs a valid token):
    trying wastes one of the 10 auth calls a minute. One login, then the call again."""
    broker, fake = tv
    broker.positions()
    fake.fault_expire_session()  # the server revokes the token
    assert broker.account().cash == 50_000.0
    assert (fake.login_count(), fake.renew_count()) == (2, 0)
    assert sum(1 for r in fake.requests if r.path.endswith("/getcashbalancesnapshot")) == 2


def test_401_on_an_order_post_logs_in_rechecks_then_places_exactly_once(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.fault_expire_session()
    order = broker.submit_order(buy("sess-1"))
    assert order.status is OrderStatus.FILLED
    assert fake.order_count("sess-1") == 1
    assert (fake.login_count(), fake.renew_count()) == (2, 0)


def test_401_on_a_close_logs_in_once_and_closes_once(tv) -> None:
    broker, fake = tv
    broker.submit_order(buy("sess-o", qty=2))
    fake.fault_expire_session()
    closed = broker.close_position("MESZ6", "sess-c")
    assert closed is not None and closed.side is Side.SELL and closed.filled_qty == 2
    assert fake.order_count("sess-c") == 1 and fake.net_pos("MESZ6") == 0
    assert (fake.login_count(), fake.renew_count()) == (2, 0)


@pytest.mark.parametrize("step", ["submit", "close"])
def test_401_on_the_order_post_itself_logs_in_once_and_places_once(tv, step: str) -> None:
    """The lookups before the POST went through; the POST itself is refused (401,
    nothing processed). One login (no renewal of the refused token), a fresh lookup by
    id, and the order is sent once more, once."""
    broker, fake = tv
    broker.submit_order(buy("post-o", qty=2))
    fake.fault_revoke_at(r"/v1/order/placeorder")
    if step == "submit":
        order, coid = broker.submit_order(buy("post-1")), "post-1"
    else:
        order, coid = broker.close_position("MESZ6", "post-c"), "post-c"
    assert order is not None and order.client_order_id == coid
    assert order.status is OrderStatus.FILLED
    assert fake.order_count(coid) == 1 and fake.order_posts() == 3  # entry, refused, sent
    assert (fake.login_count(), fake.renew_count()) == (2, 0)
    assert fake.net_pos("MESZ6") == (3 if step == "submit" else 0)


def test_a_renewal_with_a_revoked_token_is_refused_by_the_fake(tv) -> None:
    """The fake is not kinder than Tradovate: only a valid token can be renewed."""
    broker, fake = tv
    broker.positions()
    token = broker._auth.token
    fake.fault_expire_session()
    refused = requests.get(f"{fake.url}/v1/auth/renewaccesstoken", timeout=2,
                           headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401


def test_logins_over_the_auth_limit_get_a_captcha_ticket_inside_http_200(tv) -> None:
    """Tradovate allows 10 authentication requests a minute; the 11th login is answered
    HTTP 200 with a p-ticket demanding a captcha, which the adapter reports as a typed
    rate limit (and stops calling) instead of retrying. (Eleven processes: each broker
    here gets a login of its own, as it would in a process of its own.)"""
    _, fake = tv
    fresh = []
    for _ in range(11):
        tradovate_broker._LOGINS.clear()
        fresh.append(make_broker(fake))
    try:
        for b in fresh[:10]:
            b.positions()
        with pytest.raises(RateLimited) as info:
            fresh[10].positions()
        assert "captcha" in str(info.value)
        assert fake.login_count() == 11 and fake.hammered == 0
        fake.clock.advance(61)
        assert fresh[0].positions() == []  # tokens already issued keep working
    finally:
        for b in fresh:
            b.close()


def test_broker_objects_of_one_process_share_one_login_and_one_auth_budget(tv) -> None:
    """The resources build a broker per step: five runs of three broker steps in a warm
    worker are fifteen broker objects, and they log in once (before: fifteen logins, a
    captcha ticket from the eleventh). Other credentials are another login."""
    _, fake = tv
    before = fake.login_count()
    brokers = [make_broker(fake) for _ in range(15)]
    try:
        for b in brokers:
            b.positions()
        assert fake.login_count() - before <= 1 and fake.hammered == 0
        fake.fault_expire_session()  # the server drops the token: one new login for all of them
        for b in brokers:
            b.positions()
        assert fake.login_count() - before <= 2
        stranger = make_broker(fake, password="someone-elses-password")
        with pytest.raises(SessionExpired):
            stranger.positions()  # never the others' token
    finally:
        for b in brokers:
            b.close()


# ----------------------------------------------------------------------------- orders


def test_order_body_uses_contract_name_action_int_qty_clordid_and_is_automated(tv) -> None:
    broker, fake = tv
    order = broker.submit_order(buy("ord-1", qty=2))
    (body,) = fake.bodies("/order/placeorder")
    assert body["symbol"] == "MESZ6" and body["action"] == "Buy"
    assert body["orderQty"] == 2 and isinstance(body["orderQty"], int)
    assert body["clOrdId"] == "ord-1" and body["isAutomated"] is True
    assert body["orderType"] == "Market" and body["accountSpec"] == "DEMO700123"
    assert order.client_order_id == "ord-1" and order.side is Side.BUY
    assert order.filled_qty == 2 and order.filled_avg_price == pytest.approx(5850.25)


def test_resubmitting_a_client_order_id_places_nothing_new(tv) -> None:
    broker, fake = tv
    first = broker.submit_order(buy("dup-1"))
    again = broker.submit_order(buy("dup-1"))
    # a fresh broker object (a rerun in a new process) finds it through /command/list
    fresh = make_broker(fake)
    third = fresh.submit_order(buy("dup-1"))
    assert first.broker_order_id == again.broker_order_id == third.broker_order_id
    assert fake.order_posts() == 1 and fake.order_count("dup-1") == 1
    fresh.close()


def test_bracket_goes_out_as_oso_and_the_take_profit_closes_the_position(tv) -> None:
    broker, fake = tv
    broker.submit_order(buy("br-1", take_profit=5870.0, stop_loss=5840.0))
    (body,) = fake.bodies("/order/placeoso")
    assert body["bracket1"]["action"] == "Sell" and body["bracket1"]["orderType"] == "Limit"
    assert body["bracket1"]["price"] == 5870.0
    assert body["bracket2"]["orderType"] == "Stop" and body["bracket2"]["stopPrice"] == 5840.0
    assert [p.qty for p in broker.positions()] == [1.0]
    fake.set_price("MESZ6", 5871.0)
    assert broker.positions() == []
    assert broker.account().cash == pytest.approx(50_000 + (5870.0 - 5850.25) * 5)
    stop = broker.get_order("br-1-sl")
    assert stop is not None and stop.status is OrderStatus.CANCELED


def test_timeout_after_accept_finds_the_order_and_never_resends(tv) -> None:
    broker, fake = tv
    fake.fault_timeout_after_accept()
    order = broker.submit_order(buy("slow-1"))
    assert order.client_order_id == "slow-1" and order.status is OrderStatus.FILLED
    assert fake.order_posts() == 1 and fake.order_count("slow-1") == 1


def test_server_error_before_accepting_is_ambiguous_and_not_resent(tv) -> None:
    broker, fake = tv
    fake.fault_server_error()
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("five-1"))
    assert fake.order_posts() == 1 and fake.order_count("five-1") == 0
    # resolving later with the same id looks first, then places it once
    assert broker.submit_order(buy("five-1")).status is OrderStatus.FILLED
    assert fake.order_count("five-1") == 1


def test_server_error_after_accepting_returns_the_order(tv) -> None:
    broker, fake = tv
    fake.fault_server_error(accepted=True)
    assert broker.submit_order(buy("five-2")).broker_order_id
    assert fake.order_posts() == 1 and fake.order_count("five-2") == 1


def test_failure_reason_inside_http_200_is_a_typed_reject(tv) -> None:
    broker, fake = tv
    fake.fault_reject_next("MaxPosLimitReached")
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("rej-1"))
    assert "MaxPosLimitReached" in info.value.reason
    fake.fault_reject_next("Insufficient margin")
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("rej-2"))
    assert info.value.reason == "UnknownReason: Insufficient margin"
    assert broker.positions() == []


def test_risk_reject_after_acceptance_is_a_typed_reject_with_the_report(tv) -> None:
    broker, fake = tv
    fake.fault_reject_after_accept("MaxPosLimitReached", "Max position limit of 5 reached")
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("risk-1"))
    assert info.value.reason == "MaxPosLimitReached: Max position limit of 5 reached"
    # the id is taken by the rejected order: a resubmit reports it instead of placing
    again = broker.submit_order(buy("risk-1"))
    assert again.status is OrderStatus.REJECTED and "MaxPosLimitReached" in again.reason
    assert fake.order_count("risk-1") == 1 and broker.positions() == []


def test_a_400_to_the_order_post_is_recorded_rejected_and_never_resent(tv, tmp_path) -> None:
    """Tradovate refuses a malformed order with HTTP 400 and processes nothing. That is a
    reject with Tradovate's words, not a transient error that puts the intent back to
    `planned` so that every tick sends the same refused body again."""
    broker, fake = tv
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    flow, key = "ema_concentration", "2026-11-20-10:00"
    cid = client_order_id(flow, "MESZ6", key, "entry")
    account = account_key(broker, broker.account().account_id)
    # A limit leg without a price (execute_plan sends none): Tradovate's 400.
    plan = [OrderIntent(cid, flow, key, account, "MESZ6", Side.BUY, 1, "entry", 5850.25,
                        order_type="limit")]
    report = execute_plan(broker, ledger, plan, flow, key)
    [intent] = ledger.intents(flow, key)
    assert intent.status == "rejected" and report.rejected == [cid]
    assert intent.reason == "price is required for Limit orders"
    assert fake.order_posts() == 1
    rerun = execute_plan(broker, ledger, plan, flow, key)
    assert rerun.skipped == [cid] and fake.order_posts() == 1
    assert fake.order_count() == 0 and broker.positions() == []


def test_unknown_contract_is_rejected_with_invalid_contract(tv) -> None:
    broker, _ = tv
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(OrderRequest("bad-1", "NOPEZ9", Side.BUY, 1))
    assert "InvalidContract" in info.value.reason


def test_fractional_contracts_are_refused_before_any_post(tv) -> None:
    broker, fake = tv
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("frac-1", qty=1.5))
    assert fake.order_posts() == 0


def test_a_market_order_still_working_after_the_post_fills_on_a_later_poll(tv) -> None:
    """Tradovate answers the POST with an order id only; the order can still be Working
    with no fill. The adapter reports it open, and the fill when it comes."""
    broker, fake = tv
    fake.fill_in_steps([1.0])
    placed = broker.submit_order(buy("later-1"))
    assert (placed.status, placed.filled_qty) == (OrderStatus.ACCEPTED, 0.0)
    assert broker.positions() == []
    assert broker.get_order("later-1").status is OrderStatus.ACCEPTED  # polling alone fills nothing
    fake.set_price("MESZ6", 5851.0)  # the market trades
    filled = broker.get_order("later-1")
    assert (filled.status, filled.filled_qty, filled.filled_avg_price) == (OrderStatus.FILLED, 1.0, 5851.0)
    assert [(p.symbol, p.qty) for p in broker.positions()] == [("MESZ6", 1.0)]


def test_partial_fills_across_polls_are_reported_as_they_grow(tv) -> None:
    broker, fake = tv
    fake.fill_in_steps([0.5, 0.5])
    broker.submit_order(buy("part-1", qty=4))
    fake.set_price("MESZ6", 5850.0)
    first = broker.get_order("part-1")
    assert (first.status, first.filled_qty, fake.net_pos("MESZ6")) == (OrderStatus.PARTIALLY_FILLED, 2.0, 2)
    fake.set_price("MESZ6", 5851.0)
    done = broker.get_order("part-1")
    assert (done.status, done.filled_qty, fake.net_pos("MESZ6")) == (OrderStatus.FILLED, 4.0, 4)
    assert done.filled_avg_price == pytest.approx(5850.5)
    assert fake.order_count("part-1") == 1


def test_limit_order_works_and_can_be_cancelled(tv) -> None:
    broker, fake = tv
    order = broker.submit_order(buy("lim-1", order_type="limit", limit_price=5800.0))
    assert order.status is OrderStatus.ACCEPTED
    assert fake.bodies("/order/placeorder")[0]["price"] == 5800.0
    cancelled = broker.cancel_order("lim-1")
    assert cancelled is not None and cancelled.status is OrderStatus.CANCELED
    assert broker.cancel_order("never-sent") is None


# ----------------------------------------------------------------------------- positions


def test_positions_are_signed_and_flat_ones_are_skipped(tv) -> None:
    broker, fake = tv
    broker.submit_order(OrderRequest("s-1", "MNQZ6", Side.SELL, 3))
    broker.submit_order(buy("l-1"))
    broker.close_position("MESZ6", "close-l-1")
    # Tradovate keeps the flat MESZ6 row with netPos 0; we do not report it
    assert any(p["netPos"] == 0 for p in fake.positions.values())
    (short,) = broker.positions()
    assert short.symbol == "MNQZ6" and short.qty == -3.0
    assert short.avg_entry_price == pytest.approx(20450.5)


def test_close_is_an_order_carrying_our_id_once_and_is_idempotent(tv) -> None:
    """`liquidateposition` carries no client id; the close is a market order in the
    opposite direction with our id in `clOrdId`, so any process can find it."""
    broker, fake = tv
    broker.submit_order(buy("o-1", qty=2))
    closed = broker.close_position("MESZ6", "c-1")
    assert closed is not None and closed.side is Side.SELL and closed.filled_qty == 2
    assert closed.client_order_id == "c-1" and closed.status is OrderStatus.FILLED
    body = fake.bodies("/order/placeorder")[-1]
    assert (body["clOrdId"], body["action"], body["orderQty"], body["orderType"]) == (
        "c-1", "Sell", 2, "Market")
    assert body["isAutomated"] is True and body["symbol"] == "MESZ6"
    assert broker.close_position("MESZ6", "c-1").broker_order_id == closed.broker_order_id
    assert broker.close_position("MESZ6", "c-2") is None  # already flat: nothing sent
    assert paths(fake, "/order/liquidateposition") == 0
    assert fake.order_count("c-1") == 1 and fake.order_count("c-2") == 0
    assert fake.net_pos("MESZ6") == 0


def test_close_rerun_in_a_new_process_returns_the_same_order_and_sends_nothing(tv) -> None:
    """A rerun after a crash is a new adapter: nothing in memory, same server."""
    broker, fake = tv
    broker.submit_order(buy("o-np", qty=2))
    closed = broker.close_position("MESZ6", "c-np")
    posts = fake.order_posts()
    fresh = make_broker(fake)
    try:
        again = fresh.close_position("MESZ6", "c-np")
        assert again is not None, "closed by this id must not read as 'nothing to close'"
        assert again.broker_order_id == closed.broker_order_id
        assert (again.side, again.filled_qty, again.status) == (Side.SELL, 2, OrderStatus.FILLED)
        assert fake.order_posts() == posts and fake.order_count("c-np") == 1
    finally:
        fresh.close()


def test_old_close_rerun_after_a_later_buy_leaves_the_new_position_alone(tv) -> None:
    broker, fake = tv
    broker.submit_order(buy("o-t1"))
    closed = broker.close_position("MESZ6", "c-t1")
    broker.submit_order(buy("o-t2", qty=3))  # a later tick buys again
    for adapter in (broker, fresh := make_broker(fake)):  # same process, then a new one
        again = adapter.close_position("MESZ6", "c-t1")
        assert again is not None and again.broker_order_id == closed.broker_order_id
    fresh.close()
    assert fake.net_pos("MESZ6") == 3, "the re-run of the old close sold the new position"
    assert fake.order_count("c-t1") == 1 and fake.order_posts() == 3


def test_get_order_of_a_close_from_a_fresh_adapter_finds_it(tv) -> None:
    broker, fake = tv
    broker.submit_order(buy("o-g"))
    closed = broker.close_position("MESZ6", "c-g")
    fresh = make_broker(fake)
    try:
        found = fresh.get_order("c-g")
        assert found is not None and found.broker_order_id == closed.broker_order_id
        assert (found.client_order_id, found.side, found.symbol) == ("c-g", Side.SELL, "MESZ6")
    finally:
        fresh.close()


def test_a_short_position_closes_with_a_buy_of_its_size(tv) -> None:
    broker, fake = tv
    broker.submit_order(OrderRequest("s-open", "MNQZ6", Side.SELL, 3))
    closed = broker.close_position("MNQZ6", "s-close")
    assert closed is not None and closed.side is Side.BUY and closed.filled_qty == 3
    body = fake.bodies("/order/placeorder")[-1]
    assert (body["clOrdId"], body["action"], body["orderQty"]) == ("s-close", "Buy", 3)
    assert fake.net_pos("MNQZ6") == 0 and broker.positions() == []


def test_nothing_open_and_an_unknown_id_is_none_and_sends_nothing(tv) -> None:
    broker, fake = tv
    assert broker.close_position("MESZ6", "c-none") is None  # never traded
    broker.submit_order(buy("o-f"))
    broker.submit_order(OrderRequest("o-f2", "MESZ6", Side.SELL, 1))  # flat: netPos 0 row
    assert any(p["netPos"] == 0 for p in fake.positions.values())
    assert broker.close_position("MESZ6", "c-flat") is None
    assert broker.close_position("NOPEZ9", "c-unknown-contract") is None
    assert fake.order_posts() == 2 and fake.order_count("c-flat") == 0


def test_close_cancels_the_contracts_working_bracket_legs_like_liquidation(tv) -> None:
    """`liquidateposition` also cancelled the contract's working orders; the close by
    order does it explicitly, before the market order, so no bracket leg is left to
    open a new position after the close."""
    broker, fake = tv
    broker.submit_order(buy("br-c", take_profit=5870.0, stop_loss=5840.0))
    legs = [o["id"] for o in fake.orders.values() if o.get("parentId")]
    assert len(legs) == 2
    closed = broker.close_position("MESZ6", "c-br")
    assert closed is not None and closed.side is Side.SELL
    assert sorted(b["orderId"] for b in fake.bodies("/order/cancelorder")) == sorted(legs)
    assert all(fake.orders[i]["ordStatus"] == "Canceled" for i in legs)
    fake.set_price("MESZ6", 5839.0)  # through the old stop: nothing happens any more
    assert fake.net_pos("MESZ6") == 0 and broker.positions() == []


def test_close_after_a_timeout_finds_the_close_and_never_resends(tv) -> None:
    broker, fake = tv
    broker.submit_order(buy("o-2"))
    fake.fault_timeout_after_accept()
    closed = broker.close_position("MESZ6", "c-3")
    assert closed is not None and closed.status is OrderStatus.FILLED
    assert fake.order_count("c-3") == 1 and fake.order_posts() == 2
    assert broker.positions() == []


# ----------------------------------------------------------------------------- limits


def test_penalty_ticket_is_waited_out_and_resent_with_the_ticket(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.fault_rate_limit(times=1, p_time=4, path="placeorder")
    order = broker.submit_order(buy("pen-1"))
    assert order.status is OrderStatus.FILLED
    assert 4.0 in fake.clock.sleeps
    assert fake.hammered == 0
    first, resent = fake.bodies("/order/placeorder")
    assert resent.pop("p-ticket") and resent == first  # identical body plus the ticket
    assert fake.order_count("pen-1") == 1


def test_penalty_ticket_on_login_is_waited_out(tv) -> None:
    broker, fake = tv
    fake.fault_rate_limit(times=1, p_time=2, path="accesstokenrequest")
    assert broker.positions() == []
    first, resent = fake.bodies("/auth/accesstokenrequest")
    assert resent.pop("p-ticket") and resent == first
    assert 2.0 in fake.clock.sleeps and fake.hammered == 0


def test_long_penalty_is_raised_not_slept(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.fault_rate_limit(times=1, p_time=600)
    with pytest.raises(RateLimited) as info:
        broker.positions()
    assert info.value.retry_after == 600


def test_captcha_on_login_is_rate_limited_with_a_clear_message(tv) -> None:
    broker, fake = tv
    fake.fault_captcha()
    with pytest.raises(RateLimited) as info:
        broker.account()
    assert "captcha" in str(info.value) and info.value.retry_after >= 3000


@pytest.mark.parametrize("status", [423, 429])
def test_lockout_is_rate_limited_and_the_client_stops_calling(tv, status: int) -> None:
    broker, fake = tv
    broker.positions()
    fake.fault_lockout(status)
    with pytest.raises(RateLimited):
        broker.positions()
    before = len(fake.requests)
    with pytest.raises(RateLimited):
        broker.submit_order(buy("locked-1"))
    assert len(fake.requests) == before and fake.hammered == 0
    fake.clock.advance(3601)
    assert broker.submit_order(buy("locked-1")).status is OrderStatus.FILLED


def test_client_side_limiter_paces_calls(tv) -> None:
    _, fake = tv
    limiter = RateLimiter(3, 60.0, clock=lambda: fake.clock.now().timestamp(),
                          sleep=fake.clock.sleep)
    broker = make_broker(fake, rate_limiter=limiter)
    for _ in range(3):
        broker.positions()  # login is paced separately; 3 positions + 1 account/list
    assert limiter.waited > 0 and any(s > 0 for s in fake.clock.sleeps)
    broker.close()


def test_error_text_inside_http_200_is_a_broker_error(tv) -> None:
    broker, fake = tv
    broker.positions()
    fake.fault_error_text("Access is denied", path="getcashbalancesnapshot")
    with pytest.raises(BrokerError, match="Access is denied"):
        broker.account()


def test_live_environment_points_at_live_and_says_so() -> None:
    broker = TradovateBroker("u", FAKE_PASSWORD, "a", "1", 1, FAKE_SEC, environment="live")
    assert broker.is_live and broker.base_url == "https://live.tradovateapi.com/v1"
    assert FAKE_PASSWORD not in repr(broker) and FAKE_SEC not in repr(broker)
    assert not TradovateBroker("u", "p", "a", "1", 1, "s").is_live
    with pytest.raises(ValueError):
        TradovateBroker("u", "p", "a", "1", 1, "s", environment="prod")


def test_renewal_window_is_configurable(tv) -> None:
    _, fake = tv
    broker = make_broker(fake, renew_before=timedelta(minutes=30))
    broker.positions()
    fake.clock.advance(55 * 60)
    broker.positions()
    assert paths(fake, "/auth/renewaccesstoken") == 1
    broker.close()
