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


# ----------------------------------------------------------------------------- brackets


def _bars(symbol, rows, start=datetime(2025, 11, 18, 16, tzinfo=UTC)):
    import pandas as pd

    index = pd.DatetimeIndex([pd.Timestamp(start) + pd.Timedelta(hours=i) for i in range(len(rows))])
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index).assign(volume=0.0, symbol=symbol)


def _bracketed(tmp_path, side=Side.BUY, tp=110.0, sl=95.0):
    paper = PaperBroker(tmp_path / "b.sqlite", starting_cash=10_000.0, slippage_bps=10, allow_short=True)
    paper.observe_prices({"X": 100.0}, datetime(2025, 11, 18, 16, tzinfo=UTC))  # the entry's tick ends 16:00
    paper.submit_order(OrderRequest("e1", "X", side, 10, reference_price=100.0, take_profit=tp, stop_loss=sl))
    return paper


def _leg(paper, kind):
    from trading_assets.core.execution import bracket_leg_id

    return paper.get_order(bracket_leg_id("e1", kind))


def test_a_take_profit_fills_at_its_level_without_slippage_the_stop_is_canceled(tmp_path):
    paper = _bracketed(tmp_path)
    paper.observe_bars(_bars("X", [(101, 104, 99, 103), (103, 111, 102, 108)]))
    tp, sl = _leg(paper, "take_profit"), _leg(paper, "stop_loss")
    assert tp.status is OrderStatus.FILLED and tp.filled_avg_price == 110.0 and tp.side is Side.SELL
    assert tp.filled_at == datetime(2025, 11, 18, 17, tzinfo=UTC)  # the bar it fired in
    assert sl.status is OrderStatus.CANCELED and paper.positions() == []


def test_a_gap_through_the_stop_fills_at_the_open_with_slippage(tmp_path):
    paper = _bracketed(tmp_path)
    paper.observe_bars(_bars("X", [(93, 96, 90, 94)]))
    sl = _leg(paper, "stop_loss")
    assert sl.status is OrderStatus.FILLED and sl.filled_avg_price == pytest.approx(93 * (1 - 0.001))


def test_a_short_stop_is_above_and_a_bar_reaching_both_fills_the_stop(tmp_path):
    paper = _bracketed(tmp_path, side=Side.SELL, tp=90.0, sl=105.0)
    paper.observe_bars(_bars("X", [(100, 106, 89, 100)]))
    sl = _leg(paper, "stop_loss")
    assert sl.side is Side.BUY and sl.filled_avg_price == pytest.approx(105 * 1.001)
    assert _leg(paper, "take_profit").status is OrderStatus.CANCELED and paper.positions() == []


def test_bars_up_to_the_entry_nan_bars_and_bars_seen_before_fill_nothing(tmp_path):
    paper = _bracketed(tmp_path)
    before = _bars("X", [(100, 120, 80, 100)], start=datetime(2025, 11, 18, 15, tzinfo=UTC))  # the entry's own bar
    paper.observe_bars(before)
    paper.observe_bars(_bars("X", [(float("nan"), 120, 80, 100), (100, 101, 99, 100)]))
    paper.observe_bars(_bars("Y", [(100, 200, 1, 100)]))  # another market
    assert _leg(paper, "take_profit").status is _leg(paper, "stop_loss").status is OrderStatus.ACCEPTED
    paper.observe_bars(_bars("X", [(100, 120, 80, 100)], start=datetime(2025, 11, 18, 17, tzinfo=UTC)))
    assert _leg(paper, "take_profit").status is OrderStatus.ACCEPTED  # 17:00 was already walked
    assert paper.positions()[0].qty == 10


def test_levels_on_the_wrong_side_are_rejected_and_nothing_is_opened(tmp_path):
    paper = PaperBroker(tmp_path / "b.sqlite", starting_cash=10_000.0)
    with pytest.raises(OrderRejected, match="stop_loss 101 is on the wrong side"):
        paper.submit_order(OrderRequest("e1", "X", Side.BUY, 1, reference_price=100.0, stop_loss=101.0))
    assert paper.orders() == [] and paper.positions() == []


def test_closing_the_position_cancels_its_working_legs(tmp_path):
    paper = _bracketed(tmp_path)
    paper.submit_order(OrderRequest("x1", "X", Side.SELL, 10, reference_price=101.0))
    assert _leg(paper, "take_profit").status is _leg(paper, "stop_loss").status is OrderStatus.CANCELED
    assert "x1" in _leg(paper, "stop_loss").reason
