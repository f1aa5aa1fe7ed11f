"""The EMA concentration flow through Dagster: orders, reruns, crashes and bad input.

Replay data is deterministic; on 2025-11-18 TQQQ turns bullish at the 12:30 bar and on
2025-11-19 bearish again at 14:30 (see test_signal_days_are_what_the_tests_assume).
"""

import dagster as dg
import numpy as np
import pytest

from trading_assets.core.ports import OrderRequest, Side
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.resources.brokers import PaperBrokerResource
from trading_assets.resources.market_data import ReplayMarketDataResource
from trading_assets.resources.trading import TradingSettings
from trading_assets_tests.defs.conftest import check_results, failure_messages, metadata

BEARISH, BULLISH, EXIT = "2025-11-18-12:00", "2025-11-18-12:30", "2025-11-19-14:30"


def test_signal_days_are_what_the_tests_assume(harness):
    signals = {}
    for key in (BEARISH, BULLISH):
        scratch = PaperBrokerResource(state_path=str(harness.base / "scratch.sqlite"))
        result = harness.run(key, ema_concentration_broker=scratch)
        signals[key] = metadata(result, "signals", "target_signal")
    assert signals == {BEARISH: "bearish", BULLISH: "bullish"}


def test_bullish_tick_buys_the_target_and_records_intent_fill_and_equity(harness):
    result = harness.run(BULLISH)
    assert result.success
    orders = result.output_for_node("ema_concentration__orders")
    [order] = orders.itertuples()
    assert (order.symbol, order.side, order.status, order.leg) == ("TQQQ", "buy", "filled", "entry")
    price = metadata(result, "indicators", "target_price")
    assert order.qty == np.floor(0.95 * 100_000 / price)
    [fill] = harness.ledger.transactions(flow="ema_concentration").itertuples()
    assert (fill.client_order_id, fill.qty) == (order.client_order_id, order.qty)
    assert metadata(result, "equity", "equity") == pytest.approx(harness.broker.account().equity)
    [row] = metadata(result, "orders", "orders_table").records
    assert (row.data["symbol"], row.data["side"], row.data["status"]) == ("TQQQ", "buy", "filled")
    assert row.data["client_order_id"] == order.client_order_id and row.data["qty"] == order.qty
    [fill_row] = metadata(result, "transactions", "fills_table").records
    assert fill_row.data["price"] == round(fill.price, 2)
    assert check_results(result) == {"bars_complete_fresh_no_nan": True, "ledger_reconciles_with_broker": True}


def test_rerunning_a_tick_places_no_second_order(harness):
    first = harness.run(BULLISH)
    second = harness.run(BULLISH)
    assert first.success and second.success
    assert metadata(first, "orders", "placed_this_run") == 1
    assert metadata(second, "orders", "placed_this_run") == 0
    assert len(harness.broker.orders()) == 1
    assert len(harness.ledger.transactions(flow="ema_concentration")) == 1


def test_buy_then_exit_over_two_days(harness):
    assert harness.run(BULLISH).success
    result = harness.run(EXIT)
    assert result.success and metadata(result, "signals", "target_signal") == "bearish"
    sides = [o.side for o in harness.broker.orders()]
    assert sides == [Side.BUY, Side.SELL]
    assert harness.broker.positions() == []
    curve = result.output_for_node("ema_concentration__equity")
    assert list(curve["partition_key"]) == [BULLISH, EXIT]
    assert curve["equity"].iloc[-1] == pytest.approx(harness.broker.account().cash)


class CrashAfterSubmit(PaperBrokerResource):
    """The real paper broker, but the process 'dies' right after the broker accepts."""

    def get(self):
        inner = super().get()

        class Wrapper:
            name = inner.name

            def __getattr__(self, item):
                return getattr(inner, item)

            def submit_order(self, request: OrderRequest):
                inner.submit_order(request)
                raise RuntimeError("simulated crash between the broker call and the ledger write")

        return Wrapper()


def test_crash_between_broker_call_and_ledger_write_then_rerun_gives_exactly_one_order(harness):
    state = harness.resources["ema_concentration_broker"].state_path
    crashed = harness.run(BULLISH, ema_concentration_broker=CrashAfterSubmit(state_path=state))
    assert not crashed.success
    assert "simulated crash" in failure_messages(crashed)
    assert len(harness.broker.orders()) == 1
    assert harness.ledger.transactions(flow="ema_concentration").empty  # fill not yet recorded

    rerun = harness.run(BULLISH)
    assert rerun.success
    assert len(harness.broker.orders()) == 1
    assert len(harness.ledger.transactions(flow="ema_concentration")) == 1
    assert metadata(rerun, "orders", "placed_this_run") == 0
    assert check_results(rerun)["ledger_reconciles_with_broker"]


def test_a_holiday_tick_is_refused_before_anything_runs(harness):
    # Thanksgiving has no partition at all; the reason itself is test_partitions' bar_window test
    with pytest.raises(dg.DagsterUnknownPartitionError, match="2025-11-27-10:00"):
        harness.run("2025-11-27-10:00")
    assert harness.broker.orders() == [] and harness.ledger.latest_plan_key("ema_concentration") is None


class DamagedReplay(ReplayMarketDataResource):
    """Replay data with the tick's TQQQ bar corrupted in one of two ways."""

    damage: str = "nan"

    def get(self):
        inner = super().get()
        damage = self.damage

        class Provider:
            name = "damaged"

            def get_bars(self, symbols, start, end, interval="30min"):
                bars = inner.get_bars(symbols, start, end, interval)
                last = bars.index.max()
                hit = (bars["symbol"] == "TQQQ") & (bars.index == last)
                if damage == "nan":
                    bars.loc[hit, "close"] = np.nan
                    return bars
                return bars[~hit]  # a gap: the tick's own bar is missing

        return Provider()


@pytest.mark.parametrize(("damage", "message"), [("nan", "NaN"), ("gap", "not fresh")])
def test_bad_bars_fail_the_blocking_check_and_nothing_is_ordered(harness, damage, message):
    result = harness.run(BULLISH, market_data=DamagedReplay(damage=damage))
    assert not result.success or not result.asset_materializations_for_node("ema_concentration__orders")
    [bars_check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "bars_complete_fresh_no_nan"]
    assert not bars_check.passed and message in bars_check.description
    assert not result.asset_materializations_for_node("ema_concentration__signals")
    assert harness.broker.orders() == [] and not harness.ledger.has_plan("ema_concentration", BULLISH)


def test_zero_buying_power_orders_nothing_and_says_why(harness):
    broke = PaperBrokerResource(state_path=str(harness.base / "broke.sqlite"), starting_cash=0.0)
    result = harness.run(BULLISH, ema_concentration_broker=broke)
    assert result.success
    assert metadata(result, "orders", "orders") == 0
    assert "insufficient buying power" in metadata(result, "orders", "notes")
    assert broke.get().orders() == []


def test_unknown_symbol_fails_clearly_and_orders_nothing(harness):
    result = harness.run(BULLISH, ema_concentration=EmaConcentrationSettings(watchlist=["ZZZZ"]))
    assert not result.success
    assert "unknown symbols ['ZZZZ']" in failure_messages(result)
    assert harness.broker.orders() == [] and not harness.ledger.has_plan("ema_concentration", BULLISH)


def test_kill_switch_stops_all_orders(harness, monkeypatch):
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")  # flipped at run time, no redeploy
    result = harness.run(BULLISH)
    assert not result.success and "kill switch" in failure_messages(result)
    assert harness.broker.orders() == [] and not harness.ledger.has_plan("ema_concentration", BULLISH)
    monkeypatch.setenv("TRADING_KILL_SWITCH", "0")  # released: the same tick trades once
    assert harness.run(BULLISH).success and len(harness.broker.orders()) == 1


def test_drift_between_ledger_and_broker_stops_the_flow(harness):
    assert harness.run(BULLISH).success
    harness.broker.submit_order(OrderRequest("by-hand", "SPY", Side.BUY, 1, reference_price=100.0))
    result = harness.run(EXIT)
    assert not result.success
    assert "ledger and broker positions disagree" in failure_messages(result) and "SPY" in failure_messages(result)
    assert [o.client_order_id for o in harness.broker.orders()][-1] == "by-hand"  # the exit was not sent


def test_an_older_tick_after_a_newer_one_computes_signals_but_orders_nothing(harness):
    assert harness.run(BULLISH).success  # buys TQQQ
    assert harness.run("2025-11-18-13:00").success  # still holding; marked at 13:00
    marked = harness.broker.account().equity
    result = harness.run(BEARISH)  # a backfill of 12:00, which never ran: bearish, TQQQ held
    assert result.success and metadata(result, "signals", "target_signal") == "bearish"
    assert metadata(result, "orders", "orders") == 0
    assert "older than the newest processed tick" in metadata(result, "orders", "notes")
    assert len(harness.broker.orders()) == 1, "no sell for a tick in the past"
    assert harness.broker.account().equity == marked, "an old tick must not re-mark the account"


def test_stale_ticks_are_not_traded_when_a_max_age_is_set(harness):
    result = harness.run(BULLISH, trading_settings=TradingSettings(max_tick_age_minutes=30))
    assert result.success and metadata(result, "orders", "orders") == 0
    assert harness.broker.orders() == []


def test_one_vectorised_frame_for_target_holdings_and_watchlist(harness):
    settings = EmaConcentrationSettings(watchlist=["SPY", "QQQ", "AAPL"])
    result = harness.run(BULLISH, ema_concentration=settings)
    signals = result.output_for_node("ema_concentration__signals")
    assert sorted(signals.index) == ["AAPL", "QQQ", "SPY", "TQQQ"]
    assert set(signals["signal"]) <= {"bullish", "bearish", "neutral"}


def test_rerunning_an_earlier_tick_keeps_its_recorded_equity(harness):
    assert harness.run(BEARISH).success
    assert harness.run(BULLISH).success
    assert harness.run(EXIT).success  # a round trip with costs changes the account
    before = harness.ledger.equity_curve("ema_concentration").set_index("partition_key")["equity"]
    rerun = harness.run(BULLISH)
    assert rerun.success
    after = harness.ledger.equity_curve("ema_concentration").set_index("partition_key")["equity"]
    assert after.to_dict() == before.to_dict()
    assert metadata(rerun, "equity", "equity") == before[BULLISH]


def _curve(harness) -> dict[str, float]:
    return harness.ledger.equity_curve("ema_concentration").set_index("partition_key")["equity"].to_dict()


def test_backfilling_never_run_older_ticks_leaves_the_equity_history_unchanged(harness):
    assert harness.run(BULLISH).success  # buys: the account now differs from its start
    assert harness.run(EXIT).success  # a day later: sells
    before = _curve(harness)
    backfill = ["2025-11-12-10:00", "2025-11-12-10:30", "2025-11-12-11:00"]  # a week earlier, never run
    for key in backfill:
        result = harness.run(key)
        assert result.success
        equity = metadata(result, "equity", "equity")
        assert equity != equity, "an old tick has no known equity: NaN, not today's account"
        assert "never recorded" in metadata(result, "equity", "equity_recorded")
    assert _curve(harness) == before, "no point dated at an old tick may hold today's account"
    newer = harness.run("2025-11-20-10:00")
    assert newer.success
    curve = harness.ledger.equity_curve("ema_concentration")
    assert set(curve["partition_key"]) == {*before, "2025-11-20-10:00"}
    assert curve["as_of"].min().tz_convert("America/New_York").date().isoformat() == "2025-11-18"


def test_a_tick_a_year_back_does_not_stretch_the_curve(harness):
    assert harness.run(BULLISH).success
    before = _curve(harness)
    assert harness.run("2025-01-21-10:00").success  # ten months back
    assert _curve(harness) == before


def test_the_forward_only_gate_compares_with_the_newest_tick_not_the_last_written(harness):
    # Newest tick first (bearish, flat: a plan with no orders), then two backfills out of
    # order. The middle one is bullish while flat: it would buy if the gate compared with
    # the last-written plan (the oldest backfill) instead of the newest tick.
    assert harness.run(EXIT).success
    assert harness.run(BEARISH).success
    result = harness.run(BULLISH)
    assert result.success and metadata(result, "signals", "target_signal") == "bullish"
    assert metadata(result, "orders", "orders") == 0
    assert f"older than the newest processed tick {EXIT}" in metadata(result, "orders", "notes")
    assert harness.broker.orders() == []
