"""The Broker contract: every broker (paper, Alpaca, IG, Tradovate against their fakes)
shows the same behaviour to the flows, so a flow can switch brokers by configuration.

- submit is idempotent on the client order id;
- after a timeout on an order POST the order is found, not resent;
- account and positions read back; close works;
- an expired session is renewed and the call succeeds;
- rate limits are waited out, not hammered;
- business rejects come back as `OrderRejected` carrying the broker's reason;
- an order may be accepted unfilled and fill later, or in parts: the broker reports it
  open, then each growing fill, and positions follow the fills (never a fill assumed
  inside the POST).
"""

from __future__ import annotations

import pytest

from trading_assets.core.ports import (
    Account,
    AmbiguousOrderError,
    Broker,
    OrderRejected,
    OrderStatus,
    SessionExpired,
    Side,
)
from trading_assets_tests.contract.conftest import FACTORIES, Harness, brokers_with


def _qty(h: Harness) -> float:
    return sum(p.qty for p in h.broker.positions() if p.symbol == h.symbol)


def test_implements_the_protocol(harness: Harness) -> None:
    assert isinstance(harness.broker, Broker)
    assert harness.broker.name == harness.kind


def test_account_reads_back(harness: Harness) -> None:
    account = harness.broker.account()
    assert isinstance(account, Account)
    assert account.account_id
    assert account.cash > 0 and account.equity > 0 and account.buying_power > 0


def test_fill_shows_up_in_positions(harness: Harness) -> None:
    assert _qty(harness) == 0
    order = harness.settle(harness.broker.submit_order(harness.order("ct-pos-1")))
    assert order.client_order_id == "ct-pos-1" and order.side is Side.BUY
    assert order.status is OrderStatus.FILLED and order.filled_qty == pytest.approx(harness.qty)
    (pos,) = [p for p in harness.broker.positions() if p.symbol == harness.symbol]
    assert pos.qty == pytest.approx(harness.qty)
    assert pos.avg_entry_price == pytest.approx(harness.price, rel=0.01)


def test_submit_is_idempotent_on_client_order_id(harness: Harness) -> None:
    first = harness.broker.submit_order(harness.order("ct-idem-1"))
    second = harness.broker.submit_order(harness.order("ct-idem-1"))
    assert second.broker_order_id == first.broker_order_id
    assert harness.order_count("ct-idem-1") == 1
    harness.settle(second)
    assert _qty(harness) == pytest.approx(harness.qty)


def test_get_order_by_client_order_id(harness: Harness) -> None:
    placed = harness.broker.submit_order(harness.order("ct-get-1"))
    found = harness.broker.get_order("ct-get-1")
    assert found is not None and found.broker_order_id == placed.broker_order_id
    assert found.symbol == harness.symbol
    assert harness.broker.get_order("ct-never-sent") is None


def test_close_flattens_and_is_not_repeated(harness: Harness) -> None:
    harness.settle(harness.broker.submit_order(harness.order("ct-open-1")))
    closed = harness.broker.close_position(harness.symbol, "ct-close-1")
    assert closed is not None and closed.side is Side.SELL
    harness.settle(closed)
    assert _qty(harness) == 0
    orders_after_close = harness.order_count()
    harness.broker.close_position(harness.symbol, "ct-close-1")  # a rerun of the close
    assert harness.order_count() == orders_after_close
    assert _qty(harness) == 0


@pytest.mark.parametrize("harness", brokers_with("timeout"), indirect=True)
def test_timeout_after_accept_is_found_not_resent(harness: Harness) -> None:
    harness.fake.fault_timeout_after_accept()
    try:
        order = harness.broker.submit_order(harness.order("ct-slow-1"))
    except AmbiguousOrderError:
        order = harness.broker.get_order("ct-slow-1")  # resolved by lookup, not resend
    assert order is not None and order.client_order_id == "ct-slow-1"
    assert harness.order_count("ct-slow-1") == 1
    again = harness.broker.submit_order(harness.order("ct-slow-1"))
    assert again.broker_order_id == order.broker_order_id
    assert harness.order_count("ct-slow-1") == 1
    harness.settle(again)
    assert _qty(harness) == pytest.approx(harness.qty)


@pytest.mark.parametrize("harness", brokers_with("session"), indirect=True)
def test_expired_session_is_renewed_and_the_call_succeeds(harness: Harness) -> None:
    harness.broker.account()  # logged in
    harness.fake.fault_expire_session()
    assert harness.broker.account().equity > 0
    harness.fake.fault_expire_session()
    order = harness.broker.submit_order(harness.order("ct-sess-1"))
    assert harness.order_count("ct-sess-1") == 1
    assert harness.settle(order).status is OrderStatus.FILLED


def test_revoked_alpaca_keys_are_a_typed_session_error(tmp_path) -> None:
    """Alpaca has no session to renew (API keys on every call), so its side of the
    session contract is that a refused key surfaces as `SessionExpired`, typed."""
    with FACTORIES["alpaca"](tmp_path, False) as h:
        h.fake.fault_expire_session()
        with pytest.raises(SessionExpired):
            h.broker.account()


@pytest.mark.parametrize("harness", brokers_with("rate_limit"), indirect=True)
def test_rate_limit_is_waited_out_not_hammered(harness: Harness) -> None:
    harness.broker.account()  # logged in, account cached where the adapter caches it
    before = harness.requests_seen()
    harness.fake.fault_rate_limit(times=1)
    assert harness.broker.account().equity > 0
    # one refused request, one successful retry, and at most a lookup or two around them
    assert 2 <= harness.requests_seen() - before <= 4
    assert getattr(harness.fake, "hammered", 0) == 0


def test_business_reject_is_typed_with_the_brokers_reason(harness: Harness) -> None:
    request, words = harness.arrange_reject("ct-rej-1")
    with pytest.raises(OrderRejected) as info:
        harness.broker.submit_order(request)
    assert words.lower() in (info.value.reason or str(info.value)).lower()
    assert info.value.broker == harness.kind
    assert _qty(harness) == 0


@pytest.mark.parametrize("harness", brokers_with("fill_steps", fills_later=False), indirect=True)
def test_an_order_accepted_unfilled_fills_on_a_later_poll(harness: Harness) -> None:
    """The POST may answer an open order with nothing filled: the broker reports it open
    (no position yet), a resubmit finds it instead of placing another, and a later poll
    after the market traded shows the fill and the position."""
    harness.fill_in_steps([1.0])
    placed = harness.broker.submit_order(harness.order("ct-later-1"))
    assert not placed.status.is_final and placed.filled_qty == 0
    assert _qty(harness) == 0
    again = harness.broker.submit_order(harness.order("ct-later-1"))
    assert again.broker_order_id == placed.broker_order_id and harness.order_count("ct-later-1") == 1
    harness.market_moves()
    filled = harness.broker.get_order("ct-later-1")
    assert filled is not None and filled.status is OrderStatus.FILLED
    assert filled.filled_qty == pytest.approx(harness.qty)
    assert _qty(harness) == pytest.approx(harness.qty)


@pytest.mark.parametrize("harness", brokers_with("fill_steps", fills_later=False), indirect=True)
def test_partial_fills_grow_across_polls_and_positions_follow(harness: Harness) -> None:
    qty = 2 * harness.qty
    harness.fill_in_steps([0.5, 0.5])
    harness.broker.submit_order(harness.order("ct-part-1", qty=qty))
    seen = []
    for _ in range(2):
        harness.market_moves()
        order = harness.broker.get_order("ct-part-1")
        assert order is not None
        seen.append((order.status, order.filled_qty, _qty(harness)))
    assert seen == [
        (OrderStatus.PARTIALLY_FILLED, pytest.approx(qty / 2), pytest.approx(qty / 2)),
        (OrderStatus.FILLED, pytest.approx(qty), pytest.approx(qty)),
    ]
    assert harness.order_count("ct-part-1") == 1
