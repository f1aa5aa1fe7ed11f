"""The FX week at IG as hourly bars: Sunday 17:00 to Friday 17:00 New York, no bars in
the weekend or the Christmas and New Year closures, one bar per wall-clock hour across
the daylight-saving changes."""

from datetime import date, datetime

import pytest

from trading_assets.core import fx_hours
from trading_assets.core.calendar import MarketClosedError


@pytest.mark.parametrize(("start", "open_"), [
    ("2025-11-09 16:00", False),  # Sunday before the open
    ("2025-11-09 17:00", True),  # the week's first bar
    ("2025-11-12 03:00", True),  # a Wednesday night
    ("2025-11-14 16:00", True),  # the week's last bar
    ("2025-11-14 17:00", False),  # Friday after the close
    ("2025-11-15 12:00", False),  # Saturday
    ("2025-12-24 16:00", True),  # Christmas Eve's last bar
    ("2025-12-24 17:00", False),  # the Christmas closure
    ("2025-12-25 16:00", False),
    ("2025-12-25 17:00", True),  # reopens for the 26th
    ("2025-12-31 17:00", False),  # the New Year closure
    ("2026-01-01 17:00", True),
])
def test_which_hours_are_fx_bars(start, open_):
    moment = datetime.fromisoformat(start)
    assert (fx_hours.closed_reason(moment) is None) is open_


def test_a_closed_hour_says_why():
    with pytest.raises(MarketClosedError, match="FX weekend"):
        fx_hours.check_bar_start(datetime(2025, 11, 15, 12))
    with pytest.raises(MarketClosedError, match="Christmas closure"):
        fx_hours.check_bar_start(datetime(2025, 12, 25, 9))
    with pytest.raises(MarketClosedError, match="not the start of an hour"):
        fx_hours.check_bar_start(datetime(2025, 11, 12, 3, 30))


def test_a_trade_date_has_24_bars_from_17_00_the_evening_before():
    bars = fx_hours.bar_starts(date(2025, 11, 12))
    assert len(bars) == 24 and bars[0] == datetime(2025, 11, 11, 17) and bars[-1] == datetime(2025, 11, 12, 16)
    assert fx_hours.bar_starts(date(2025, 11, 15)) == []  # Saturday
    assert fx_hours.bar_starts(date(2025, 12, 25)) == []  # Christmas
    assert fx_hours.bar_starts(date(2025, 11, 10))[0] == datetime(2025, 11, 9, 17)  # Monday opens Sunday evening


def test_the_daylight_saving_hours_are_found_and_all_in_the_weekend():
    hours = fx_hours.repeated_hours(date(2025, 1, 1), date(2026, 12, 31))
    assert hours == [datetime(2025, 3, 9, 2), datetime(2025, 11, 2, 1), datetime(2026, 3, 8, 2),
                     datetime(2026, 11, 1, 1)]
    assert all(fx_hours.closed_reason(h) for h in hours)
