"""The paper broker: fills at the tick's price with slippage and commission, idempotent on
client order id, a cash account that rejects what a real one would, persisted in SQLite."""

from datetime import UTC, datetime

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.core.ports import Broker, OrderRejected, OrderRequest, OrderStatus, Side


@pytest.fixture
def broker(tmp_path):
    return PaperBroker(tmp_path / "paper.sqlite", starting_cash=10_000.0, commission_per_share=0.01, slippage_bps=10)


def buy(cid, qty, price, symbol="TQQQ"):
    return OrderRequest(cid, symbol, Side.BUY, qty, reference_price=price)


def test_implements_the_broker_protocol(broker):
    assert isinstance(broker, Broker)


def test_market_buy_fills_at_price_plus_slippage_with_commission(broker):
    order = broker.submit_order(buy("a1", 10, 100.0))
    assert order.status is OrderStatus.FILLED and order.filled_qty == 10
    assert order.filled_avg_price == pytest.approx(100.1)  # 10 bps against us
    assert order.commission == pytest.approx(0.10)
    acct = broker.account()
    assert acct.cash == pytest.approx(10_000 - 10 * 100.1 - 0.10)
    [pos] = broker.positions()
    assert (pos.symbol, pos.qty, pos.avg_entry_price) == ("TQQQ", 10, pytest.approx(100.1))


def test_sell_fills_below_price_and_credits_cash(broker):
    broker.submit_order(buy("a1", 10, 100.0))
    cash_before = broker.account().cash
    sell = broker.submit_order(OrderRequest("a2", "TQQQ", Side.SELL, 4, reference_price=110.0))
    assert sell.filled_avg_price == pytest.approx(109.89)
    assert broker.account().cash == pytest.approx(cash_before + 4 * 109.89 - 0.04)
    assert broker.positions()[0].qty == 6


def test_same_client_order_id_never_places_a_second_order(broker):
    first = broker.submit_order(buy("dup", 10, 100.0))
    again = broker.submit_order(buy("dup", 10, 100.0))
    assert again == first
    assert len(broker.orders()) == 1
    assert broker.positions()[0].qty == 10


def test_state_survives_a_new_process_object(broker, tmp_path):
    broker.submit_order(buy("a1", 5, 100.0))
    reopened = PaperBroker(tmp_path / "paper.sqlite", starting_cash=999_999.0)
    assert reopened.account().cash == pytest.approx(broker.account().cash)  # starting cash only applies once
    assert reopened.get_order("a1").filled_qty == 5
    assert reopened.get_order("nope") is None


def test_rejects_what_a_cash_account_cannot_do(broker):
    with pytest.raises(OrderRejected, match="insufficient buying power") as exc:
        broker.submit_order(buy("big", 1_000, 100.0))
    assert exc.value.reason == "insufficient buying power"
    with pytest.raises(OrderRejected, match="insufficient qty"):
        broker.submit_order(OrderRequest("s", "TQQQ", Side.SELL, 1, reference_price=100.0))
    with pytest.raises(OrderRejected, match="no price"):
        broker.submit_order(OrderRequest("np", "AAPL", Side.BUY, 1))
    assert broker.orders() == [] and broker.account().cash == 10_000.0


def test_equity_marks_positions_to_the_observed_prices(broker):
    from datetime import UTC, datetime

    broker.submit_order(buy("a1", 10, 100.0))
    broker.observe_prices({"TQQQ": 120.0}, datetime.now(UTC))
    acct = broker.account()
    assert acct.equity == pytest.approx(acct.cash + 10 * 120.0)


def test_limit_order_rests_until_cancelled(broker):
    order = broker.submit_order(OrderRequest("lim", "TQQQ", Side.BUY, 1, order_type="limit", limit_price=90.0,
                                             reference_price=100.0))
    assert order.status is OrderStatus.ACCEPTED and broker.positions() == []
    assert broker.cancel_order("lim").status is OrderStatus.CANCELED
    assert broker.cancel_order("unknown") is None


def test_close_position_sells_everything_once(broker):
    broker.submit_order(buy("a1", 10, 100.0))
    closed = broker.close_position("TQQQ", "close-1")
    assert closed.side is Side.SELL and closed.filled_qty == 10
    assert broker.positions() == []
    assert broker.close_position("TQQQ", "close-1") == closed  # idempotent
    assert broker.close_position("TQQQ", "close-2") is None  # nothing left


def test_a_shorting_account_sells_below_zero_marks_and_covers(tmp_path):
    broker = PaperBroker(tmp_path / "futures.sqlite", starting_cash=100_000.0, allow_short=True)
    broker.submit_order(OrderRequest("s1", "MNQZ6", Side.SELL, 2, reference_price=24_500.0))
    [pos] = broker.positions()
    assert (pos.qty, pos.avg_entry_price) == (-2, 24_500.0)
    assert broker.account().cash == 100_000.0 + 49_000.0
    broker.observe_prices({"MNQZ6": 24_400.0}, datetime(2026, 12, 2, 15, 0, tzinfo=UTC))
    assert broker.account().equity == 100_000.0 + 2 * 100.0  # the short gained 100 a contract
    broker.submit_order(OrderRequest("b1", "MNQZ6", Side.BUY, 3, reference_price=24_400.0))  # cover and go long 1
    [pos] = broker.positions()
    assert (pos.qty, pos.avg_entry_price) == (1, 24_400.0)
    assert broker.close_position("MNQZ6", "c1").side is Side.SELL and broker.positions() == []


def test_a_cash_account_still_refuses_to_go_short(tmp_path):
    broker = PaperBroker(tmp_path / "cash.sqlite", starting_cash=100_000.0)
    with pytest.raises(OrderRejected, match="insufficient qty"):
        broker.submit_order(OrderRequest("s1", "TQQQ", Side.SELL, 1, reference_price=50.0))
