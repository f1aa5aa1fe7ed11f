"""AlpacaBroker against a loopback Alpaca that speaks the wire format and misbehaves on cue.

What a user relies on: one order per client order id whatever the network does, typed
errors with Alpaca's own words, money as numbers, and no secret in any message.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from trading_assets.adapters.alpaca.broker import AlpacaBroker
from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core import calendar as nyse
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
from trading_assets_tests.fakes.alpaca import SECRET_KEY, FakeAlpaca, make_alpaca_under_test


@pytest.fixture
def alpaca() -> Iterator[tuple[AlpacaBroker, FakeAlpaca]]:
    with make_alpaca_under_test() as pair:
        yield pair


def buy(cid: str, qty: float = 10, symbol: str = "TQQQ", **kw: object) -> OrderRequest:
    return OrderRequest(client_order_id=cid, symbol=symbol, side=Side.BUY, qty=qty, **kw)


def test_is_a_broker_and_paper_by_default() -> None:
    broker = AlpacaBroker("k", "s")
    assert isinstance(broker, Broker)
    assert broker.client._base_url.startswith("https://paper-api.alpaca.markets")
    assert "s" not in repr(broker).replace("paper", "").replace("AlpacaBroker", "")


def test_account_and_positions_convert_wire_strings_to_numbers(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("TQQQ", 12, 50.25)
    fake.set_price("TQQQ", 55.5)
    acct = broker.account()
    assert acct.cash == 100_000.0 and acct.account_id == fake.account_number
    assert acct.equity == pytest.approx(100_000.0 + 12 * 55.5)
    [pos] = broker.positions()
    assert (pos.symbol, pos.qty, pos.avg_entry_price, pos.market_price) == (
        "TQQQ",
        12.0,
        50.25,
        55.5,
    )
    assert isinstance(pos.qty, float)


def test_short_positions_come_back_negative(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("SQQQ", -3, 20.0)
    assert broker.positions()[0].qty == -3.0


def test_market_order_fills_and_moves_cash_and_positions(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    order = broker.submit_order(buy("flow-TQQQ-1"))
    assert order.status is OrderStatus.FILLED
    assert (order.filled_qty, order.filled_avg_price) == (10.0, 50.0)
    assert order.client_order_id == "flow-TQQQ-1"
    assert broker.account().cash == pytest.approx(99_500.0)
    assert [(p.symbol, p.qty) for p in broker.positions()] == [("TQQQ", 10.0)]
    sent = next(r.json() for r in fake.requests if r.method == "POST")
    assert sent["client_order_id"] == "flow-TQQQ-1" and sent["type"] == "market"


def test_resubmitting_a_client_order_id_returns_the_first_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    first = broker.submit_order(buy("c-dup"))
    again = broker.submit_order(buy("c-dup"))
    assert again.broker_order_id == first.broker_order_id
    assert fake.order_count("c-dup") == 1
    assert broker.positions()[0].qty == 10.0


def test_an_order_that_fills_later_is_open_after_the_post_and_filled_on_a_later_poll(alpaca) -> None:
    """Alpaca often answers the POST with `new` and nothing filled; the fill shows up when
    the order is looked up again. The adapter must report the open order, not invent a fill."""
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fill_in_steps([1.0])
    placed = broker.submit_order(buy("later-1"))
    assert (placed.status, placed.filled_qty, placed.filled_avg_price) == (OrderStatus.NEW, 0.0, None)
    assert broker.positions() == []
    assert broker.get_order("later-1").status is OrderStatus.NEW  # polling alone fills nothing
    fake.set_price("TQQQ", 50.5)  # the market trades
    filled = broker.get_order("later-1")
    assert (filled.status, filled.filled_qty, filled.filled_avg_price) == (OrderStatus.FILLED, 10.0, 50.5)
    assert [(p.symbol, p.qty) for p in broker.positions()] == [("TQQQ", 10.0)]


def test_partial_fills_grow_across_polls_with_a_weighted_average_price(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fill_in_steps([0.3, 0.3, 0.4])
    assert broker.submit_order(buy("part-1")).filled_qty == 0.0
    seen = []
    for price in (50.0, 51.0, 52.0):
        fake.set_price("TQQQ", price)
        order = broker.get_order("part-1")
        seen.append((order.status, order.filled_qty, broker.positions()[0].qty))
    assert seen == [
        (OrderStatus.PARTIALLY_FILLED, 3.0, 3.0),
        (OrderStatus.PARTIALLY_FILLED, 6.0, 6.0),
        (OrderStatus.FILLED, 10.0, 10.0),
    ]
    assert order.filled_avg_price == pytest.approx((3 * 50 + 3 * 51 + 4 * 52) / 10)
    assert broker.account().cash == pytest.approx(100_000.0 - (3 * 50 + 3 * 51 + 4 * 52))


def test_an_out_of_hours_market_order_is_held_accepted_until_the_open(alpaca) -> None:
    """Alpaca takes a market day order while the market is closed and holds it `accepted`
    (nothing filled, no position) until the open; it does not reject it, nor fill it at
    the last price."""
    broker, fake = alpaca
    nyse.sessions_between(date(2024, 1, 2), date(2024, 1, 3))  # load the calendar before timing out
    fake.set_price("TQQQ", 50.0)
    fake.close_market(datetime(2024, 11, 30, 15, 0, tzinfo=UTC))  # a Saturday
    assert broker.clock()["is_open"] is False
    placed = broker.submit_order(buy("weekend-1"))
    assert (placed.status, placed.filled_qty) == (OrderStatus.ACCEPTED, 0.0)
    assert broker.get_order("weekend-1").status is OrderStatus.ACCEPTED and broker.positions() == []
    fake.now = datetime(2024, 12, 2, 15, 0, tzinfo=UTC)  # Monday 10:00 New York
    fake.set_price("TQQQ", 51.0)
    opened = broker.get_order("weekend-1")
    assert (opened.status, opened.filled_qty, opened.filled_avg_price) == (OrderStatus.FILLED, 10.0, 51.0)
    assert fake.order_posts() == 1


def test_buying_power_held_by_an_open_buy_refuses_the_next_order(alpaca) -> None:
    """An open buy holds buying power at Alpaca: the account shows less, and an order
    beyond what is left is Alpaca's 403 'insufficient buying power', typed as a reject."""
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    broker.submit_order(buy("rest-1", qty=2_000, order_type="limit", limit_price=40.0))  # holds 80,000
    assert broker.account().buying_power == pytest.approx(20_000.0)
    assert broker.account().cash == pytest.approx(100_000.0)
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("next-1", qty=500))  # 25,000 > 20,000 left
    assert info.value.reason == "insufficient buying power"
    assert fake.order_count("next-1") == 0
    broker.cancel_order("rest-1")
    assert broker.account().buying_power == pytest.approx(100_000.0)
    assert broker.submit_order(buy("next-2", qty=500)).status is OrderStatus.FILLED


def test_shares_held_by_an_open_sell_cannot_be_sold_twice(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("TQQQ", 10, 45.0)
    fake.set_price("TQQQ", 50.0)
    broker.submit_order(OrderRequest("tp-1", "TQQQ", Side.SELL, 10, order_type="limit", limit_price=60.0))
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(OrderRequest("sell-1", "TQQQ", Side.SELL, 5))
    assert info.value.reason == "insufficient qty available for order (requested: 5, available: 0)"
    assert broker.positions()[0].qty == 10.0


def test_get_order_unknown_is_none(alpaca) -> None:
    broker, _ = alpaca
    assert broker.get_order("never-sent") is None


def test_limit_order_rests_then_cancels_and_cancel_is_repeatable(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    order = broker.submit_order(buy("lim-1", order_type="limit", limit_price=40.0))
    assert order.status is OrderStatus.ACCEPTED and order.filled_qty == 0
    assert broker.cancel_order("lim-1").status is OrderStatus.CANCELED
    assert broker.cancel_order("lim-1").status is OrderStatus.CANCELED
    assert broker.cancel_order("nope") is None
    assert broker.positions() == []


def test_cancelling_a_filled_order_returns_it_filled(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    broker.submit_order(buy("f-1"))
    assert broker.cancel_order("f-1").status is OrderStatus.FILLED


def test_bracket_order_goes_out_with_both_legs(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    order = broker.submit_order(buy("br-1", take_profit=55.0, stop_loss=47.5))
    assert order.status is OrderStatus.FILLED
    body = next(r.json() for r in fake.requests if r.method == "POST")
    assert body["order_class"] == "bracket"
    assert float(body["take_profit"]["limit_price"]) == 55.0
    assert float(body["stop_loss"]["stop_price"]) == 47.5
    assert fake.order_count() == 3  # parent + take-profit leg + stop-loss leg


def test_half_a_bracket_is_refused_before_sending(alpaca) -> None:
    broker, fake = alpaca
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("br-2", take_profit=55.0))
    assert fake.order_posts() == 0


def test_timeout_after_accept_resolves_to_the_accepted_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_timeout_after_accept()
    order = broker.submit_order(buy("slow-1"))
    assert order.client_order_id == "slow-1" and order.status is OrderStatus.FILLED
    assert fake.order_count("slow-1") == 1


def test_504_after_accept_is_posted_once_and_found_by_lookup(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_gateway_timeout_after_accept()
    order = broker.submit_order(buy("gw-1"))
    assert fake.order_posts() == 1  # no resend by alpaca-py: the lookup settled it
    assert fake.order_count("gw-1") == 1
    assert order.status is OrderStatus.FILLED and broker.positions()[0].qty == 10.0


def test_504_after_accept_places_the_shares_once_where_alpaca_would_take_the_id_again() -> None:
    """Issue 7.2: after a 504, alpaca-py resent the order by itself. Against a server that
    takes a client order id again once its order is closed, that was a second order
    (twice the shares). Through the real alpaca-py client: one POST, the shares once."""
    with make_alpaca_under_test(ids_unique_among="open") as (broker, fake):
        fake.set_price("TQQQ", 50.0)
        fake.fault_gateway_timeout_after_accept()
        order = broker.submit_order(buy("gw-open"))
        assert fake.order_posts() == 1
        assert fake.order_count("gw-open") == 1
        assert order.status is OrderStatus.FILLED and order.filled_qty == 10.0
        assert [(p.symbol, p.qty) for p in broker.positions()] == [("TQQQ", 10.0)]
        assert broker.account().cash == pytest.approx(100_000.0 - 10 * 50.0)


def test_504_then_429_on_the_lookups_still_finds_the_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_gateway_timeout_then_rate_limit(times=3)
    order = broker.submit_order(buy("gw-429"))  # POST 504; lookup 429 x3 (retried reads) then 200
    assert order.client_order_id == "gw-429" and fake.order_count("gw-429") == 1
    assert fake.order_posts() == 1


def test_reject_inside_http_200_is_a_reject_and_stays_one_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_reject_in_body()
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("rej-200"))
    with pytest.raises(OrderRejected):
        broker.submit_order(buy("rej-200"))  # same id again: the 422 lookup finds the reject
    assert fake.order_count("rej-200") == 1
    assert broker.get_order("rej-200").status is OrderStatus.REJECTED


def test_server_error_before_accept_is_ambiguous_then_safe_to_resolve(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_server_error()
    with pytest.raises(AmbiguousOrderError) as info:
        broker.submit_order(buy("amb-1"))
    assert "amb-1" in str(info.value)
    assert fake.order_count("amb-1") == 0
    # the caller resolves by lookup, finds nothing, and may place it now: exactly once
    assert broker.get_order("amb-1") is None
    broker.submit_order(buy("amb-1"))
    assert fake.order_count("amb-1") == 1


def test_server_error_after_accept_returns_the_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_server_error(after_accept=True)
    assert broker.submit_order(buy("acc-500")).status is OrderStatus.FILLED
    assert fake.order_count("acc-500") == 1 and fake.order_posts() == 1


def test_non_json_200_after_accept_returns_the_order(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_garbled_after_accept()
    assert broker.submit_order(buy("garbled")).client_order_id == "garbled"
    assert fake.order_count("garbled") == 1


def test_non_json_gateway_page_on_post_is_ambiguous_not_a_crash(alpaca) -> None:
    broker, fake = alpaca
    fake.fault_non_json(path=r"^/v2/orders$")
    with pytest.raises(AmbiguousOrderError):
        broker.submit_order(buy("html-1"))


def test_non_json_error_on_reads_is_a_broker_error(alpaca) -> None:
    broker, fake = alpaca
    fake.fault_non_json()
    with pytest.raises(BrokerError, match="502"):
        broker.account()


def test_business_reject_carries_alpacas_reason(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_reject_next("account is restricted from trading")
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("rej-1"))
    assert info.value.reason == "account is restricted from trading"
    assert fake.order_count() == 0


def test_a_40010001_that_is_not_a_duplicate_is_a_reject_with_alpacas_message(alpaca) -> None:
    """40010001 is Alpaca's general invalid-request code: a too-long id is refused, not
    "already placed", so it is a reject carrying Alpaca's words, not an unknown outcome."""
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("x" * 129))
    assert info.value.reason == "client_order_id must be no more than 128 characters"
    assert fake.order_count() == 0 and fake.order_posts() == 1


def test_an_inactive_asset_is_recorded_rejected_with_the_reason_and_never_resent(alpaca, tmp_path) -> None:
    """Issue 7.3: Alpaca's 422 40010001 'asset ... is not active' was taken for a duplicate id,
    looked up, not found, recorded `unknown` without Alpaca's words, and every rerun POSTed
    again. Through execute_plan and the SQLite ledger: `rejected` with the message, once."""
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.inactive_assets.add("TQQQ")
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    flow, key = "ema_concentration", "2025-11-26-10:00"
    cid = client_order_id(flow, "TQQQ", key, "entry")
    account = account_key(broker, broker.account().account_id)
    plan = [OrderIntent(cid, flow, key, account, "TQQQ", Side.BUY, 10, "entry", 50.0)]

    report = execute_plan(broker, ledger, plan, flow, key)
    [intent] = ledger.intents(flow, key)
    assert (intent.status, intent.reason) == ("rejected", 'asset "TQQQ" is not active')
    assert report.rejected == [cid] and fake.order_posts() == 1

    rerun = execute_plan(broker, ledger, plan, flow, key)
    assert rerun.skipped == [cid] and fake.order_posts() == 1
    assert ledger.intents(flow, key)[0].status == "rejected"
    assert fake.order_count() == 0 and broker.positions() == []


def test_insufficient_buying_power_is_a_reject(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(buy("big", qty=1_000_000))
    assert info.value.reason == "insufficient buying power"
    with pytest.raises(OrderRejected, match="insufficient qty"):
        fake.set_position("AAPL", 1, 100.0)
        broker.submit_order(OrderRequest("sell-2", "AAPL", Side.SELL, 2))


def test_revoked_key_is_session_expired_and_never_leaks_the_secret(alpaca) -> None:
    broker, fake = alpaca
    fake.fault_expire_session()
    with pytest.raises(SessionExpired) as info:
        broker.account()
    assert "do not expire" in str(info.value)
    assert SECRET_KEY not in str(info.value)
    with pytest.raises(SessionExpired):
        broker.submit_order(buy("after-401"))
    assert fake.order_count() == 0
    fake.restore_session()
    assert broker.account().cash == 100_000.0


def test_one_429_on_the_order_post_is_resent_only_after_a_lookup(alpaca) -> None:
    broker, fake = alpaca
    fake.set_price("TQQQ", 50.0)
    fake.fault_rate_limit(times=1)
    assert broker.submit_order(buy("rl-1")).status is OrderStatus.FILLED
    assert fake.order_count("rl-1") == 1
    after_429 = [(r.method, r.path) for r in fake.requests][:3]
    assert after_429 == [
        ("POST", "/v2/orders"),  # 429
        ("GET", "/v2/orders:by_client_order_id"),  # not there: Alpaca refused it unprocessed
        ("POST", "/v2/orders"),
    ]


def test_persistent_429_raises_rate_limited_and_places_nothing(alpaca) -> None:
    broker, fake = alpaca
    fake.fault_rate_limit(times=10)
    with pytest.raises(RateLimited) as info:
        broker.account()
    assert 0 < info.value.retry_after <= 60
    fake.faults.clear()
    fake.fault_rate_limit(times=10)
    fake.set_price("TQQQ", 50.0)
    with pytest.raises(RateLimited):
        broker.submit_order(buy("rl-2"))
    assert fake.order_count() == 0


def test_close_position_uses_our_id_and_is_idempotent(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("TQQQ", 7, 40.0)
    fake.set_price("TQQQ", 45.0)
    first = broker.close_position("TQQQ", "close-TQQQ")
    assert (first.side, first.qty, first.client_order_id) == (Side.SELL, 7.0, "close-TQQQ")
    again = broker.close_position("TQQQ", "close-TQQQ")
    assert again.broker_order_id == first.broker_order_id
    assert broker.positions() == [] and fake.order_count() == 1
    assert broker.close_position("MSFT", "close-MSFT") is None


def test_close_short_buys_back(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("SQQQ", -4, 20.0)
    fake.set_price("SQQQ", 19.0)
    assert broker.close_position("SQQQ", "close-SQQQ").side is Side.BUY
    assert broker.positions() == []


def test_close_all_liquidates_and_cancels_open_orders(alpaca) -> None:
    broker, fake = alpaca
    fake.set_position("TQQQ", 5, 40.0)
    fake.set_position("AAPL", 2, 150.0)
    fake.set_price("MSFT", 400.0)
    broker.submit_order(buy("lim-msft", symbol="MSFT", qty=1, order_type="limit", limit_price=300.0))
    results = broker.close_all()
    assert sorted(r["symbol"] for r in results) == ["AAPL", "TQQQ"]
    assert all(r["order"].status is OrderStatus.FILLED for r in results)
    assert broker.positions() == []
    assert broker.get_order("lim-msft").status is OrderStatus.CANCELED


def test_clock_and_calendar_know_half_days_and_dst(alpaca) -> None:
    broker, fake = alpaca
    nyse.sessions_between(date(2024, 1, 2), date(2024, 1, 3))  # load the calendar before timing out
    fake.now = datetime(2024, 11, 29, 17, 30, tzinfo=UTC)  # 12:30 New York, half day
    clock = broker.clock()
    assert clock["is_open"] is True
    assert clock["next_close"] == datetime(2024, 11, 29, 18, 0, tzinfo=UTC)  # 13:00 EST
    days = broker.calendar(date(2024, 11, 27), date(2024, 12, 2))
    assert [d["date"] for d in days] == [date(2024, 11, 27), date(2024, 11, 29), date(2024, 12, 2)]
    assert days[1]["close"].hour == 13
    # DST: the open is 09:30 New York both sides of the switch, 13:30Z vs 14:30Z
    [summer] = broker.calendar(date(2024, 3, 11), date(2024, 3, 11))
    [winter] = broker.calendar(date(2024, 3, 8), date(2024, 3, 8))
    assert summer["open"].astimezone(UTC).hour == 13 and winter["open"].astimezone(UTC).hour == 14


def test_client_side_limiter_paces_every_http_call(alpaca) -> None:
    _, fake = alpaca
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    limiter = RateLimiter(2, 60.0, clock=lambda: now[0], sleep=sleep)
    broker = AlpacaBroker(
        "PKFAKEKEY0000000000",
        SECRET_KEY,
        url_override=fake.url,
        limiter=limiter,
        retry_wait_seconds=0,
    )
    for _ in range(3):
        broker.account()
    assert limiter.waited == pytest.approx(60.0)
