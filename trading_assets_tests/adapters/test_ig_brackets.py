"""IG take-profit / stop-loss brackets through the real trading-ig library against the
loopback IG fake: the fake triggers attached orders as IG does, the broker resolves the
engine's bracket legs (`<entry>:tp`, `<entry>:sl`) from open positions and the activity
history, and the tick engine books what fired.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from trading_assets.adapters.ig.broker import IGBroker, IGConnection
from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import bracket_leg_id
from trading_assets.core.ports import (
    IntentStatus,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    Side,
)
from trading_assets.core.tick import PlannedOrder, TickPlan, TickState, run_tick
from trading_assets_tests.fakes.ig import FakeIG

EPIC = "CS.D.EURUSD.MINI.IP"
OTHER = "CS.D.GBPUSD.MINI.IP"
SPREAD = 0.0002  # bid = mid - 0.0001, offer = mid + 0.0001
START_BALANCE = 10_000.0


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG(balance=START_BALANCE).start()
    server.set_price(EPIC, 1.1000, spread=SPREAD)
    server.set_price(OTHER, 1.2700, spread=SPREAD)
    try:
        yield server
    finally:
        server.stop()


def make_broker(fake: FakeIG, **kw: object) -> IGBroker:
    """An IGBroker on the fake whose client-side pacing does not make a test wait (the
    real limiters allow 30 reads a minute; some tests here make more)."""
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                        timeout=0.5, sleep=lambda _s: None,
                        trading_limiter=RateLimiter(10_000, 60.0),
                        non_trading_limiter=RateLimiter(10_000, 60.0))
    return IGBroker(fake.username, fake.password, fake.api_key, sleep=lambda _s: None,
                    connection=conn, **kw)  # type: ignore[arg-type]


@pytest.fixture
def broker(fake: FakeIG) -> IGBroker:
    return make_broker(fake)


def legs(broker: IGBroker, entry: str):
    return (broker.get_order(bracket_leg_id(entry, "take_profit")),
            broker.get_order(bracket_leg_id(entry, "stop_loss")))


def bracketed(cid: str, side: Side, tp: float, sl: float, qty: float = 2.0) -> OrderRequest:
    return OrderRequest(cid, EPIC, side, qty, take_profit=tp, stop_loss=sl)


def activity_reads(fake: FakeIG) -> list:
    return [r for r in fake.requests if "/history/activity" in r.path]


# ----------------------------------------------------------------------------- triggers


@pytest.mark.parametrize(
    ("side", "tp", "sl", "path", "fired", "exit_level"),
    [
        # BUY fills at the offer 1.1001; closes on the bid.
        (Side.BUY, 1.1050, 1.0950, [1.1020, 1.1048, 1.1070, 1.1100], "take_profit", 1.1050),
        # The bid falls through the stop in one jump: filled at that bid (slipped), not
        # at the stop and not at a later, lower bid.
        (Side.BUY, 1.1050, 1.0950, [1.0980, 1.0960, 1.0940, 1.0900], "stop_loss", 1.0939),
        # SELL fills at the bid 1.0999; closes on the offer.
        (Side.SELL, 1.0950, 1.1050, [1.0980, 1.0952, 1.0930, 1.0900], "take_profit", 1.0950),
        (Side.SELL, 1.0950, 1.1050, [1.1020, 1.1045, 1.1065, 1.1100], "stop_loss", 1.1066),
    ],
    ids=["buy-take-profit", "buy-stop-slips", "sell-take-profit", "sell-stop-slips"],
)
def test_a_triggered_leg_is_filled_at_igs_exit_and_the_other_is_canceled(
        broker: IGBroker, fake: FakeIG, side: Side, tp: float, sl: float, path: list[float],
        fired: str, exit_level: float) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    entry = broker.submit_order(bracketed("brk-1", side, tp, sl))
    fake.move_market(EPIC, path, spread=SPREAD)

    tp_leg, sl_leg = legs(broker, "brk-1")
    won, lost = (tp_leg, sl_leg) if fired == "take_profit" else (sl_leg, tp_leg)
    assert won is not None and lost is not None
    assert won.client_order_id == bracket_leg_id("brk-1", fired)
    assert won.status is OrderStatus.FILLED
    assert won.filled_qty == 2.0 and won.filled_avg_price == pytest.approx(exit_level)
    assert won.side is (Side.SELL if side is Side.BUY else Side.BUY) and won.symbol == EPIC
    assert won.filled_at is not None and before <= won.filled_at <= datetime.now(UTC)
    assert lost.status is OrderStatus.CANCELED and lost.filled_qty == 0
    # The position is gone and its profit or loss is booked into the balance.
    assert broker.positions() == []
    sign = 1 if side is Side.BUY else -1
    pnl = sign * (exit_level - entry.filled_avg_price) * 2
    assert broker.account().cash == pytest.approx(START_BALANCE + pnl)
    # IG closed it by itself: no client deal was sent for the exit.
    assert fake.order_count() == 1


def test_legs_are_working_while_the_position_is_open(broker: IGBroker, fake: FakeIG) -> None:
    entry = broker.submit_order(bracketed("brk-open", Side.BUY, 1.1050, 1.0950))
    fake.move_market(EPIC, [1.1030, 1.0970, 1.1010], spread=SPREAD)  # near both, reaching neither
    tp_leg, sl_leg = legs(broker, "brk-open")
    for leg, level in ((tp_leg, "1.105"), (sl_leg, "1.095")):
        assert leg is not None and leg.status is OrderStatus.ACCEPTED
        assert leg.filled_qty == 0 and leg.qty == 2.0 and leg.side is Side.SELL
        assert leg.broker_order_id == entry.broker_order_id
        assert level in (leg.reason or "")
    # Cancelling a leg is a read: IG's attached orders go only with their position.
    assert broker.cancel_order(bracket_leg_id("brk-open", "stop_loss")) == sl_leg
    assert [(p.symbol, p.qty) for p in broker.positions()] == [(EPIC, 2.0)]
    assert fake.order_count() == 1


def test_our_own_netting_close_cancels_both_legs(broker: IGBroker, fake: FakeIG) -> None:
    entry = broker.submit_order(bracketed("brk-net", Side.BUY, 1.1050, 1.0950))
    fake.set_price(EPIC, 1.1020, spread=SPREAD)
    closed = broker.close_position(EPIC, "brk-net-close")
    assert closed is not None and closed.filled_avg_price == pytest.approx(1.1019)
    tp_leg, sl_leg = legs(broker, "brk-net")
    for leg in (tp_leg, sl_leg):
        assert leg is not None and leg.status is OrderStatus.CANCELED and leg.filled_qty == 0
        assert "brk-net-close" in (leg.reason or "")
    assert broker.account().cash == pytest.approx(
        START_BALANCE + 2 * (1.1019 - entry.filled_avg_price))
    # The attached orders went with the position: the market reaching them does nothing.
    fake.move_market(EPIC, [1.1100, 1.0900], spread=SPREAD)
    assert broker.positions() == [] and fake.order_count() == 2


def test_a_leg_of_an_entry_ig_never_saw_is_none(broker: IGBroker) -> None:
    assert broker.get_order(bracket_leg_id("never-placed", "take_profit")) is None
    assert broker.cancel_order(bracket_leg_id("never-placed", "stop_loss")) is None


# ----------------------------------------------------------------------------- dealing rules


@pytest.mark.parametrize(("tp", "sl"), [
    (1.1050, 1.0996),  # stop 0.0005 under the fill: nearer than the market's 0.0010
    (1.1050, 1.1005),  # stop above the bid: on the wrong side
    (1.1004, 1.0950),  # limit 0.0003 over the fill: nearer than 0.0010
    (1.0990, 1.0950),  # limit under the fill: on the wrong side
], ids=["stop-too-close", "stop-wrong-side", "limit-too-close", "limit-wrong-side"])
def test_attached_levels_breaking_the_dealing_rules_are_rejected_and_nothing_opens(
        broker: IGBroker, fake: FakeIG, tp: float, sl: float) -> None:
    fake.set_dealing_rules(EPIC, min_stop_distance=0.0010, min_limit_distance=0.0010)
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(bracketed("brk-rule", Side.BUY, tp, sl))
    assert info.value.reason == "ATTACHED_ORDER_LEVEL_ERROR"
    assert broker.positions() == [] and broker.account().cash == START_BALANCE
    assert legs(broker, "brk-rule") == (None, None)


def test_a_size_below_the_markets_minimum_is_rejected(broker: IGBroker, fake: FakeIG) -> None:
    fake.set_dealing_rules(EPIC, min_deal_size=1.0)
    with pytest.raises(OrderRejected) as info:
        broker.submit_order(bracketed("brk-small", Side.BUY, 1.1050, 1.0950, qty=0.5))
    assert info.value.reason == "MINIMUM_ORDER_SIZE_ERROR"
    assert broker.positions() == []
    assert broker.submit_order(bracketed("brk-big", Side.BUY, 1.1050, 1.0950, qty=1.0)).filled_qty == 1


# ----------------------------------------------------------------------------- sessions, paging


def test_an_expired_session_while_resolving_a_leg_renews_once_and_answers(
        broker: IGBroker, fake: FakeIG) -> None:
    broker.submit_order(bracketed("brk-exp", Side.BUY, 1.1050, 1.0950))
    fake.move_market(EPIC, [1.1060], spread=SPREAD)
    assert fake.logins == 1
    # Expire between the positions read and the activity read.
    real_open_deals = broker._open_deals

    def open_deals_then_expire():
        deals = real_open_deals()
        fake.fault_expire_session()
        return deals

    broker._open_deals = open_deals_then_expire  # type: ignore[method-assign]
    tp_leg = broker.get_order(bracket_leg_id("brk-exp", "take_profit"))
    assert tp_leg is not None and tp_leg.status is OrderStatus.FILLED
    assert tp_leg.filled_avg_price == pytest.approx(1.1050)
    assert fake.logins == 2
    assert len(activity_reads(fake)) == 2  # one refused with 401, one answered


def test_the_activity_history_is_read_page_by_page_until_the_entry(fake: FakeIG) -> None:
    """A busy account: the bracketed entry's opening is on the third page. The broker
    follows IG's `next` links (through the library's request path) to it."""
    broker = make_broker(fake, activity_page_size=4)
    broker.submit_order(bracketed("brk-page", Side.BUY, 1.1050, 1.0950))
    for i in range(5):  # 10 more activities: opens and closes in another market
        broker.submit_order(OrderRequest(f"busy-{i}", OTHER, Side.SELL, 1))
        broker.close_position(OTHER, f"busy-{i}-close")
    fake.move_market(EPIC, [1.0940], spread=SPREAD)
    sl_leg = broker.get_order(bracket_leg_id("brk-page", "stop_loss"))
    assert sl_leg is not None and sl_leg.status is OrderStatus.FILLED
    assert sl_leg.filled_avg_price == pytest.approx(1.0939)
    reads = activity_reads(fake)
    assert len(reads) == 3
    assert all(r.headers["version"] == "3" and r.query["detailed"] == "true" for r in reads)
    assert "to" not in reads[0].query and reads[1].query["to"] > reads[2].query["to"]
    assert len({r.query["from"] for r in reads}) == 1  # the window's start is kept


def test_the_library_reads_the_fakes_activity_history(broker: IGBroker, fake: FakeIG) -> None:
    """IG's v3 activity shapes as trading-ig's `fetch_account_activity` parses them
    (detailed: one row per action), with `from`/`to`, `dealId` and `detailed` honoured."""
    entry = broker.submit_order(bracketed("brk-lib", Side.BUY, 1.1050, 1.0950))
    fake.move_market(EPIC, [1.1060], spread=SPREAD)
    svc = broker.conn.service
    since = datetime.now(UTC) - timedelta(minutes=5)
    rows = broker.conn.run(lambda: svc.fetch_account_activity(from_date=since, detailed=True))
    assert list(zip(rows["channel"], rows["actionType"], rows["affectedDealId"], strict=True)) == [
        ("SYSTEM", "POSITION_CLOSED", entry.broker_order_id),  # newest first
        ("PUBLIC_WEB_API", "POSITION_OPENED", entry.broker_order_id),
    ]
    assert rows["level"].iloc[0] == pytest.approx(1.1050)
    assert rows["stopLevel"].iloc[1] == 1.0950 and rows["limitLevel"].iloc[1] == 1.1050
    plain = broker.conn.run(lambda: svc.fetch_account_activity(from_date=since))
    assert plain["details"].isna().all() and len(plain) == 2
    only_open = broker.conn.run(lambda: svc.fetch_account_activity(
        from_date=since, deal_id=entry.broker_order_id, fiql_filter="channel!=SYSTEM"))
    assert list(only_open["dealId"]) == [entry.broker_order_id]
    future = broker.conn.run(lambda: svc.fetch_account_activity(
        from_date=datetime.now(UTC) + timedelta(minutes=1)))
    assert len(future) == 0


def test_the_librarys_own_pager_stops_after_the_first_page(broker: IGBroker, fake: FakeIG) -> None:
    """Why the broker pages the history itself: trading-ig 0.0.25 follows `next` with `to`
    set to the link's `from` (a typo), so the second request asks for an empty window.
    If this starts failing, the library was fixed and could page for us."""
    for i in range(5):
        broker.submit_order(OrderRequest(f"lib-{i}", OTHER, Side.BUY, 1))
    svc = broker.conn.service
    since = datetime.now(UTC) - timedelta(minutes=5)
    rows = broker.conn.run(lambda: svc.fetch_account_activity(from_date=since, page_size=2))
    assert len(rows) == 2
    broker.activity_page_size = 2
    assert [a["details"]["dealReference"] for a in broker._activities()] == [
        f"lib-{i}" for i in reversed(range(5))]


# ----------------------------------------------------------------------------- the tick engine

FLOW = "fib_retracement"


def test_the_tick_engine_books_the_take_profit_ig_triggered(
        broker: IGBroker, fake: FakeIG, tmp_path) -> None:
    """Tick 0 enters long with both levels; between ticks IG closes the deal at the limit;
    tick 1 finds the take-profit filled (booked to the exit's tick), the stop-loss
    canceled, and the ledger agrees with IG (no drift)."""
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def enter(state: TickState) -> TickPlan:
        return TickPlan([PlannedOrder(EPIC, Side.BUY, 2.0, "entry", state.prices[EPIC], "setup",
                                      take_profit=1.1050, stop_loss=1.0950)])

    def nothing(state: TickState) -> TickPlan:
        return TickPlan(notes=["no signal"])

    def tick(i: int, plan, price: float):
        return run_tick(broker, ledger, flow=FLOW, partition_key=f"k{i}",
                        bar_end=start + timedelta(hours=i), prices={EPIC: price}, plan=plan,
                        exit_partition=lambda _at: "exit-tick", now=start + timedelta(hours=i))

    first = tick(0, enter, 1.1000)
    entry, tp, sl = first.intents
    assert entry.status is IntentStatus.FILLED
    assert (tp.status, sl.status) == (IntentStatus.ACCEPTED, IntentStatus.ACCEPTED)
    fake.move_market(EPIC, [1.1030, 1.1055], spread=SPREAD)
    second = tick(1, nothing, 1.1055)
    assert second.recovered == 2
    tp, sl = (i for i in ledger.intents(FLOW, "k0") if i.client_order_id != entry.client_order_id)
    assert (tp.status, tp.filled_qty, tp.filled_avg_price) == (IntentStatus.FILLED, 2.0,
                                                              pytest.approx(1.1050))
    assert sl.status is IntentStatus.CANCELED
    assert ledger.net_positions(entry.account).get(EPIC, 0.0) == pytest.approx(0.0)
    txns = ledger.transactions(flow=FLOW)
    sells = txns[txns["side"] == "sell"]
    assert list(sells["partition_key"]) == ["exit-tick"]
    assert list(sells["price"]) == [pytest.approx(1.1050)]
