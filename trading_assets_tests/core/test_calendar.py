"""NYSE calendar: holidays, half days and DST come from exchange_calendars, in New York time."""

from datetime import date

import pandas as pd
import pytest

from trading_assets.core import calendar


def test_christmas_and_thanksgiving_are_closed_with_their_names():
    assert not calendar.is_session("2025-12-25")
    assert "Christmas" in calendar.closed_reason("2025-12-25")
    assert "Thanksgiving" in calendar.closed_reason("2025-11-27")
    assert "Saturday" in calendar.closed_reason("2025-11-29")
    assert calendar.closed_reason("2025-11-26") is None


def test_regular_day_has_13_bars_from_0930_to_1530():
    starts = calendar.session_bar_starts("2025-11-25")
    assert [t.strftime("%H:%M") for t in starts] == [
        "09:30", "10:00", "10:30", "11:00", "11:30", "12:00", "12:30",
        "13:00", "13:30", "14:00", "14:30", "15:00", "15:30",
    ]


def test_half_day_after_thanksgiving_closes_at_1300():
    assert calendar.is_half_day("2025-11-28")
    assert not calendar.is_half_day("2025-11-26")
    starts = calendar.session_bar_starts("2025-11-28")
    assert len(starts) == 7
    assert starts[-1].strftime("%H:%M") == "12:30"


@pytest.mark.parametrize(
    ("day", "open_utc"),
    [
        ("2025-03-07", "14:30"),  # EST, the Friday before the spring switch
        ("2025-03-10", "13:30"),  # EDT, the Monday after
        ("2025-10-31", "13:30"),  # EDT
        ("2025-11-03", "14:30"),  # EST again
    ],
)
def test_open_stays_0930_new_york_across_dst(day, open_utc):
    first = calendar.session_bar_starts(day)[0]
    assert first.strftime("%H:%M") == "09:30"
    assert first.tz_convert("UTC").strftime("%H:%M") == open_utc


def test_closed_day_raises_market_closed_with_reason():
    with pytest.raises(calendar.MarketClosedError, match="Christmas"):
        calendar.session_open_close("2025-12-25")


def test_last_completed_session_respects_the_close():
    ny = calendar.TZ
    # Before Friday's close: Wednesday (Thursday is Thanksgiving).
    assert calendar.last_completed_session(pd.Timestamp("2025-11-28 12:00", tz=ny)) == date(2025, 11, 26)
    # After the 13:00 half-day close: Friday itself.
    assert calendar.last_completed_session(pd.Timestamp("2025-11-28 13:05", tz=ny)) == date(2025, 11, 28)
    # On a Sunday: Friday.
    assert calendar.last_completed_session(pd.Timestamp("2025-11-30 10:00", tz=ny)) == date(2025, 11, 28)


def test_previous_sessions_skip_holidays():
    assert calendar.previous_sessions("2025-11-28", 3) == [date(2025, 11, 25), date(2025, 11, 26), date(2025, 11, 28)]


def test_non_bar_datetimes_cover_holidays_and_half_day_afternoons():
    excluded = calendar.non_bar_datetimes(date(2025, 11, 24), date(2025, 11, 30))
    days = pd.Series([d.date() for d in excluded]).value_counts().to_dict()
    assert days == {date(2025, 11, 27): 13, date(2025, 11, 28): 6}
    assert min(d.time() for d in excluded if d.date() == date(2025, 11, 28)).strftime("%H:%M") == "13:00"
