"""The Fibonacci flow's hourly FX partitions agree with core/fx_hours.py hour by hour."""

from datetime import date, datetime, timedelta

import pandas as pd
import pytest

from trading_assets.core import fx_hours
from trading_assets.core.calendar import MarketClosedError
from trading_assets.defs.fib_retracement.partitions import fx_bar_window, fx_bars_1h


def test_the_partitions_are_exactly_the_fx_bars_through_dst_and_the_closures():
    keys = fx_bars_1h.get_partition_keys(current_time=datetime(2026, 1, 10))
    expected = []
    moment = datetime(2025, 1, 5, 17)
    while moment < datetime(2026, 1, 9, 23):
        if fx_hours.closed_reason(moment) is None:
            expected.append(moment.strftime("%Y-%m-%d-%H:%M"))
        moment += timedelta(hours=1)
    assert keys[: len(expected)] == expected
    assert "2025-11-02-01:00" not in keys  # the repeated autumn hour, a Sunday morning
    assert len([k for k in keys if k.startswith("2025-11-12")]) == 24  # a weekday: 24 bars
    assert not [k for k in keys if k.startswith("2025-11-15")]  # Saturday: none


def test_a_key_names_one_hour_in_utc_and_a_closed_one_says_why():
    start, end = fx_bar_window("2025-11-14-16:00")  # Friday's last bar
    assert (start, end) == (pd.Timestamp("2025-11-14 21:00", tz="UTC"), pd.Timestamp("2025-11-14 22:00", tz="UTC"))
    window = fx_bars_1h.time_window_for_partition_key("2025-11-14-16:00")
    assert (pd.Timestamp(window.start), pd.Timestamp(window.end)) == (start, end)
    start, end = fx_bar_window("2025-07-09-10:00")  # summer time: 14:00 UTC
    assert start == pd.Timestamp("2025-07-09 14:00", tz="UTC") and end - start == pd.Timedelta(hours=1)
    with pytest.raises(MarketClosedError, match="FX weekend"):
        fx_bar_window("2025-11-15-10:00")
    with pytest.raises(MarketClosedError, match="not an hourly bar key"):
        fx_bar_window("tomorrow")


def test_closures_are_listed_for_every_year_the_partitions_cover():
    assert fx_hours.closure_hours(date(2027, 1, 1), date(2027, 12, 31))[0] == datetime(2026, 12, 31, 17)
