"""The IG Fibonacci flow in Dagster, offline: one hourly FX partition fetches every
configured market's last 40+ bars (replay FX week), checks them, finds the swing points and
signals, places bracketed deals at the paper broker exactly once, books the brackets that
fire to the tick of their bar, and reconciles."""

import itertools
from datetime import date, datetime

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core import fx_hours
from trading_assets.core.execution import bracket_leg_id
from trading_assets.core.ports import IntentStatus, OrderStatus
from trading_assets.defs.fib_retracement.assets import BARS_CHECK, FLOW_ASSETS
from trading_assets.defs.fib_retracement.partitions import trade_date_keys
from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
from trading_assets.defs.resources import local_resources
from trading_assets.defs.tick_assets import RECONCILE_CHECK
from trading_assets_tests.defs.conftest import check_results, failure_messages

EPICS = ["CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP"]


def _run(tmp_path, key: str, epics=EPICS, **resources):
    settings = FibRetracementSettings(instruments=[FibInstrument(epic=e) for e in epics])
    return dg.materialize(FLOW_ASSETS, partition_key=key, raise_on_error=False,
                          resources=local_resources(tmp_path, fib_retracement=settings, **resources))


def _world(tmp_path):
    resources = local_resources(tmp_path)
    return resources["fib_retracement_broker"].get(), resources["ledger"].get()


def test_a_monday_morning_bar_sees_40_bars_back_across_the_weekend(tmp_path):
    result = _run(tmp_path, "2025-11-17-03:00")  # Monday 03:00 New York: the week is 10 bars old
    assert result.success
    bars = result.output_for_node("fib_retracement__bars")
    assert check_results(result) == {BARS_CHECK: True, RECONCILE_CHECK: True}
    for epic in EPICS:
        mine = bars[bars["symbol"] == epic]
        assert len(mine) >= 40 and mine.index.max() == pd.Timestamp("2025-11-17 08:00", tz="UTC")
        local = mine.index.tz_convert(fx_hours.TZ).tz_localize(None)
        assert all(fx_hours.closed_reason(t.to_pydatetime()) is None for t in local)  # no weekend bars
        assert local.min() < datetime(2025, 11, 14, 17)  # reached back into last week
    swings = result.output_for_node("fib_retracement__swings")
    assert set(swings["symbol"]) == set(EPICS)
    for _, group in swings.groupby("symbol"):
        kinds = list(group["kind"])
        assert all(a != b for a, b in itertools.pairwise(kinds))  # alternating
        assert (group["position"] >= 3).all()  # a swing needs `window` bars after it
    signals = result.output_for_node("fib_retracement__signals")
    assert list(signals.index) == sorted(EPICS)
    assert set(signals["signal"]) <= {"buy", "sell", "none"} and signals["reason"].map(bool).all()


def test_a_weekend_key_is_not_a_partition(tmp_path):
    with pytest.raises(dg.DagsterUnknownPartitionError):
        _run(tmp_path, "2025-11-15-12:00")


def _nan_close(frame):
    frame.loc[frame.index[-2], "close"] = float("nan")
    return frame


def _one_hour_missing(frame):
    eur = frame.index[frame["symbol"] == "CS.D.EURUSD.MINI.IP"]
    return frame.drop(index=eur[-10:-9])


def _only_30_bars(frame):
    return frame.groupby("symbol", group_keys=False).tail(30)


@pytest.mark.parametrize(("damage", "problem"), [
    (_nan_close, "NaN"),
    (_one_hour_missing, "CS.D.EURUSD.MINI.IP: 1 of the last 40 hourly bars missing (first 2025-11-12 01:00"),
    (_only_30_bars, "30 bars, need the last 40"),
], ids=["nan", "gap", "short"])
def test_bad_bars_fail_the_blocking_check_and_nothing_is_signalled_or_ordered(tmp_path, damage, problem):
    from trading_assets.adapters.replay.market_data import ReplayMarketData
    from trading_assets.resources.market_data import ReplayMarketDataResource

    class Damaged(ReplayMarketData):
        def get_bars(self, *args, **kwargs):
            return damage(super().get_bars(*args, **kwargs))

    class DamagedResource(ReplayMarketDataResource):
        def get(self):
            return Damaged(session="fx")

    result = _run(tmp_path, "2025-11-12-10:00", fib_retracement_prices=DamagedResource())
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and problem in check.description, check.description
    assert not [e for e in result.all_events if e.is_step_success and e.step_key in (
        "fib_retracement__signals", "fib_retracement__orders")]
    broker, ledger = _world(tmp_path)
    assert broker.orders() == [] and ledger.intents("fib_retracement") == []


@pytest.mark.parametrize("key", ["2025-11-14-16:00", "2025-11-09-17:00"])
def test_the_weeks_last_and_first_bars_are_partitions(tmp_path, key):
    assert _run(tmp_path, key).success


def test_a_day_of_ticks_places_bracketed_deals_once_and_reruns_place_nothing(tmp_path):
    keys = trade_date_keys(date(2025, 11, 13))
    for key in keys:
        assert _run(tmp_path, key).success, key
    broker, ledger = _world(tmp_path)
    placed = broker.orders()
    entries = [i for i in ledger.intents("fib_retracement") if i.leg == "entry"]
    assert entries, "the day should enter at least once"
    for entry in entries:  # every entry went to the broker with both brackets attached
        legs = {leg.client_order_id: leg for leg in ledger.intents("fib_retracement", entry.partition_key)}
        tp, sl = (legs[bracket_leg_id(entry.client_order_id, k)] for k in ("take_profit", "stop_loss"))
        assert entry.status is IntentStatus.FILLED
        assert (tp.reference_price, sl.reference_price) == (entry.extra["take_profit"], entry.extra["stop_loss"])
        assert tp.side is sl.side is not entry.side and tp.qty == sl.qty == entry.qty
        working = {tp.status, sl.status}
        assert working in ({IntentStatus.ACCEPTED}, {IntentStatus.FILLED, IntentStatus.CANCELED},
                           {IntentStatus.CANCELED})
    for key in keys[::6]:  # reruns resolve the stored plans; the broker sees no new order
        result = _run(tmp_path, key)
        assert result.success and check_results(result)[RECONCILE_CHECK]
    assert broker.orders() == placed


def test_a_bracket_that_fires_between_ticks_is_booked_to_the_tick_of_its_bar(tmp_path):
    # EURUSD buys at 2025-11-11 02:00 New York; its stop-loss is hit in the 08:00 bar. No tick runs
    # from 03:00 to 09:00 (a scheduler outage): the 10:00 tick finds the exit and books it to 08:00.
    eur = ["CS.D.EURUSD.MINI.IP"]
    assert _run(tmp_path, "2025-11-11-02:00", eur).success
    broker, ledger = _world(tmp_path)
    [entry] = [i for i in ledger.intents("fib_retracement") if i.leg == "entry"]
    stop = broker.get_order(bracket_leg_id(entry.client_order_id, "stop_loss"))
    assert stop.status is OrderStatus.ACCEPTED and broker.positions()[0].qty == 1.0
    result = _run(tmp_path, "2025-11-11-10:00", eur)
    assert result.success and check_results(result)[RECONCILE_CHECK]
    stop = broker.get_order(stop.client_order_id)
    assert stop.status is OrderStatus.FILLED and stop.filled_avg_price == entry.extra["stop_loss"]
    assert broker.get_order(bracket_leg_id(entry.client_order_id, "take_profit")).status is OrderStatus.CANCELED
    fills = ledger.transactions(flow="fib_retracement")
    booked = fills.set_index("client_order_id")["partition_key"]
    assert booked[stop.client_order_id] == "2025-11-11-08:00" and booked[entry.client_order_id] == "2025-11-11-02:00"
    assert broker.positions() == [] and ledger.net_positions(entry.account) == {}
    # the 08:00 tick's transactions asset shows the exit when that tick is (re)materialised
    later = _run(tmp_path, "2025-11-11-08:00", eur)
    shown = later.output_for_node("fib_retracement__transactions")
    assert list(shown["client_order_id"]) == [stop.client_order_id]


def test_the_kill_switch_stops_a_tick_that_would_order_and_places_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    result = _run(tmp_path, "2025-11-11-02:00", ["CS.D.EURUSD.MINI.IP"])
    assert not result.success and "kill switch" in failure_messages(result)
    broker, ledger = _world(tmp_path)
    assert broker.orders() == [] and ledger.intents("fib_retracement") == []
