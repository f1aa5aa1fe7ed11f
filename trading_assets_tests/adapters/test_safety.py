"""The kill switch and the live-trading gate stop orders, and only orders."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.safety import GuardedBroker, is_live_broker
from trading_assets.adapters.tradovate.broker import TradovateBroker
from trading_assets.core.ports import (
    Broker,
    KillSwitchEngaged,
    LiveTradingNotEnabled,
    OrderRequest,
    OrderStatus,
    Side,
)
from trading_assets.settings import env_flag, kill_switch_engaged
from trading_assets_tests.fakes.tradovate import make_broker, make_tradovate_under_test


def buy(coid: str, qty: float = 10, price: float = 100.0) -> OrderRequest:
    return OrderRequest(coid, "AAPL", Side.BUY, qty, reference_price=price)


@pytest.fixture
def paper(tmp_path) -> PaperBroker:
    return PaperBroker(tmp_path / "paper.sqlite")


@pytest.fixture(autouse=True)
def _no_ambient_kill_switch(monkeypatch) -> None:
    monkeypatch.delenv("TRADING_KILL_SWITCH", raising=False)


def test_guarded_broker_is_a_broker_and_passes_orders_when_safe(paper) -> None:
    guarded = GuardedBroker(paper)
    assert isinstance(guarded, Broker) and guarded.name == "paper"
    assert guarded.submit_order(buy("ok-1")).status is OrderStatus.FILLED
    assert [p.symbol for p in guarded.positions()] == ["AAPL"]
    assert guarded.orders()[0].client_order_id == "ok-1"  # adapter extras reachable


def test_kill_switch_flag_refuses_orders_and_closes_but_not_reads(paper) -> None:
    paper.submit_order(buy("before"))
    paper.submit_order(OrderRequest("lim", "AAPL", Side.BUY, 1, order_type="limit",
                                    limit_price=50.0, reference_price=100.0))
    guarded = GuardedBroker(paper, kill_switch=True)
    with pytest.raises(KillSwitchEngaged):
        guarded.submit_order(buy("after"))
    with pytest.raises(KillSwitchEngaged):
        guarded.close_position("AAPL", "close-1")
    assert paper.get_order("after") is None and paper.get_order("close-1") is None
    assert guarded.account().cash == pytest.approx(100_000 - 1_000)
    assert guarded.positions()[0].qty == 10
    assert guarded.get_order("before") is not None
    assert guarded.cancel_order("lim").status is OrderStatus.CANCELED  # pulling orders is fine
    guarded.observe_prices({"AAPL": 101.0}, datetime.now(UTC))


def test_environment_kill_switch_is_read_at_call_time(paper, monkeypatch) -> None:
    guarded = GuardedBroker(paper, kill_switch=kill_switch_engaged)  # what every resource passes
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    with pytest.raises(KillSwitchEngaged):
        guarded.submit_order(buy("k-1"))
    monkeypatch.setenv("TRADING_KILL_SWITCH", "0")
    assert guarded.submit_order(buy("k-1")).status is OrderStatus.FILLED
    monkeypatch.setenv("TRADING_KILL_SWITCH", "true")
    with pytest.raises(KillSwitchEngaged):
        guarded.close_position("AAPL", "k-close")
    assert [p.qty for p in paper.positions()] == [10]


def test_kill_switch_from_a_callable_source(paper) -> None:
    state = {"on": False}
    guarded = GuardedBroker(paper, kill_switch=lambda: state["on"])
    guarded.submit_order(buy("c-1"))
    state["on"] = True
    with pytest.raises(KillSwitchEngaged):
        guarded.submit_order(buy("c-2"))


@pytest.mark.parametrize(("value", "engaged"), [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), (" on ", True),
    ("0", False), ("false", False), ("", False), ("off", False),
])
def test_env_flag_values(value: str, engaged: bool, monkeypatch) -> None:
    monkeypatch.setenv("TRADING_KILL_SWITCH", value)
    assert env_flag("TRADING_KILL_SWITCH") is engaged
    assert kill_switch_engaged() is engaged


def test_live_broker_refuses_orders_without_explicit_live_trading() -> None:
    with make_tradovate_under_test() as (_, fake):
        live = make_broker(fake, environment="live")
        guarded = GuardedBroker(live)
        assert guarded.live
        with pytest.raises(LiveTradingNotEnabled):
            guarded.submit_order(OrderRequest("live-1", "MESZ6", Side.BUY, 1))
        with pytest.raises(LiveTradingNotEnabled):
            guarded.close_position("MESZ6", "live-close")
        assert fake.requests == []  # refused before anything went over the wire
        assert guarded.positions() == []  # reads still work
        live.close()


def test_live_trading_setting_lets_live_orders_through() -> None:
    with make_tradovate_under_test() as (_, fake):
        live = make_broker(fake, environment="live")
        guarded = GuardedBroker(live, live_trading=True)
        assert guarded.submit_order(OrderRequest("live-2", "MESZ6", Side.BUY, 1)).filled_qty == 1
        assert fake.order_count("live-2") == 1
        live.close()


def test_kill_switch_beats_live_trading(paper) -> None:
    guarded = GuardedBroker(paper, live=True, live_trading=True, kill_switch=True)
    with pytest.raises(KillSwitchEngaged):
        guarded.submit_order(buy("x"))


def test_live_detection_for_each_adapter_shape(paper) -> None:
    assert not is_live_broker(paper)
    assert is_live_broker(TradovateBroker("u", "p", "a", "1", 1, "s", environment="live"))
    assert not is_live_broker(TradovateBroker("u", "p", "a", "1", 1, "s"))

    class AlpacaLike:
        paper = False

    class IGConn:
        acc_type = "live"

    class IGLike:
        conn = IGConn()

    assert is_live_broker(AlpacaLike()) and is_live_broker(IGLike())
