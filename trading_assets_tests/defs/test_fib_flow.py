"""The IG Fibonacci flow's signals side in Dagster, offline: one hourly FX partition
fetches every configured market's last 40+ bars (replay FX week), checks them, finds the
swing points and the signal each market would act on."""

import itertools
from datetime import datetime

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core import fx_hours
from trading_assets.defs.fib_retracement.assets import BARS_CHECK, FLOW_ASSETS
from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
from trading_assets.defs.resources import local_resources

EPICS = ["CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP"]


def _run(tmp_path, key: str, **resources):
    settings = FibRetracementSettings(instruments=[FibInstrument(epic=e) for e in EPICS])
    return dg.materialize(FLOW_ASSETS, partition_key=key, raise_on_error=False,
                          resources=local_resources(tmp_path, fib_retracement=settings, **resources))


def test_a_monday_morning_bar_sees_40_bars_back_across_the_weekend(tmp_path):
    result = _run(tmp_path, "2025-11-17-03:00")  # Monday 03:00 New York: the week is 10 bars old
    assert result.success
    bars = result.output_for_node("fib_retracement__bars")
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == BARS_CHECK and check.passed
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


def test_a_market_with_nan_bars_fails_the_blocking_check_and_no_signal_is_computed(tmp_path):
    from trading_assets.adapters.replay.market_data import ReplayMarketData
    from trading_assets.resources.market_data import ReplayMarketDataResource

    class Gappy(ReplayMarketData):
        def get_bars(self, *args, **kwargs):
            frame = super().get_bars(*args, **kwargs)
            frame.loc[frame.index[-2], "close"] = float("nan")
            return frame

    class GappyResource(ReplayMarketDataResource):
        def get(self):
            return Gappy(session="fx")

    result = _run(tmp_path, "2025-11-12-10:00", fib_retracement_prices=GappyResource())
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "NaN" in check.description
    assert not [e for e in result.all_events if e.is_step_success and e.step_key == "fib_retracement__signals"]


@pytest.mark.parametrize("key", ["2025-11-14-16:00", "2025-11-09-17:00"])
def test_the_weeks_last_and_first_bars_are_partitions(tmp_path, key):
    assert _run(tmp_path, key).success
