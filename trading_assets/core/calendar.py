"""NYSE sessions, holidays and half days, from exchange_calendars (XNYS).

All times are America/New_York wall-clock, so DST switches are handled by the time-zone
database rather than by fixed UTC offsets. Bars are 30 minutes by default, starting at
the session open: a full day has 13 (09:30 ... 15:30), a 13:00 half day has 7.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from functools import cache

import exchange_calendars as xcals
import pandas as pd

EXCHANGE = "XNYS"
TZ = "America/New_York"
BAR_MINUTES = 30


class MarketClosedError(ValueError):
    """Asked for a bar or session on a day or at a time the exchange is closed."""


@cache
def _calendar() -> xcals.ExchangeCalendar:
    return xcals.get_calendar(EXCHANGE, start="2015-01-01")


def _as_date(day: date | datetime | pd.Timestamp | str) -> date:
    if isinstance(day, str):
        return date.fromisoformat(day[:10])
    if isinstance(day, datetime):
        return day.date()
    return day


def calendar_bounds() -> tuple[date, date]:
    """First and last session the calendar knows (it looks about a year ahead)."""
    cal = _calendar()
    return cal.first_session.date(), cal.last_session.date()


def is_session(day: date | datetime | str) -> bool:
    """True if the NYSE trades on this calendar day."""
    d = _as_date(day)
    first, last = calendar_bounds()
    if not first <= d <= last:
        raise MarketClosedError(f"{d} is outside the NYSE calendar range {first}..{last}")
    return bool(_calendar().is_session(pd.Timestamp(d)))


@cache
def _holiday_names() -> dict[date, str]:
    cal = _calendar()
    names: dict[date, str] = {}
    first, last = calendar_bounds()
    hols = cal.regular_holidays
    if hols is not None:
        for ts, name in hols.holidays(pd.Timestamp(first), pd.Timestamp(last), return_name=True).items():
            names[ts.date()] = str(name)
    for ts in cal.adhoc_holidays:
        names.setdefault(pd.Timestamp(ts).date(), "ad-hoc closure")
    return names


def closed_reason(day: date | datetime | str) -> str | None:
    """Why the exchange is closed on `day` (None if it is a session)."""
    d = _as_date(day)
    if is_session(d):
        return None
    if d.weekday() >= 5:
        return f"{d} is a {d.strftime('%A')}"
    return f"{d} is an NYSE holiday ({_holiday_names().get(d, 'market closed')})"


def session_open_close(day: date | datetime | str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Open and close of a session in New York time; MarketClosedError if none."""
    d = _as_date(day)
    reason = closed_reason(d)
    if reason:
        raise MarketClosedError(reason)
    cal = _calendar()
    ts = pd.Timestamp(d)
    return cal.session_open(ts).tz_convert(TZ), cal.session_close(ts).tz_convert(TZ)


def is_half_day(day: date | datetime | str) -> bool:
    """An early close (13:00) session, e.g. the day after Thanksgiving."""
    _, close = session_open_close(day)
    return close.time() < time(16, 0)


def session_bar_starts(day: date | datetime | str, minutes: int = BAR_MINUTES) -> list[pd.Timestamp]:
    """Starts of the `minutes`-long bars of one session (New York time).

    The last bar may be shorter if the session length is not a multiple of `minutes`.
    """
    open_, close = session_open_close(day)
    starts = pd.date_range(open_, close, freq=f"{minutes}min", inclusive="left")
    return list(starts)


def sessions_between(start: date | str, end: date | str) -> list[date]:
    """Sessions in [start, end], inclusive."""
    cal = _calendar()
    s, e = pd.Timestamp(_as_date(start)), pd.Timestamp(_as_date(end))
    return [ts.date() for ts in cal.sessions_in_range(s, e)]


def previous_sessions(day: date | datetime | str, count: int) -> list[date]:
    """The `count` sessions ending with `day` (which must be a session), oldest first."""
    d = _as_date(day)
    if not is_session(d):
        raise MarketClosedError(closed_reason(d) or f"{d} is not a session")
    cal = _calendar()
    ts = pd.Timestamp(d)
    idx = cal.sessions.get_loc(ts)
    if idx - count + 1 < 0:
        raise MarketClosedError(f"not enough calendar history before {d} for {count} sessions")
    return [s.date() for s in cal.sessions[idx - count + 1 : idx + 1]]


def last_completed_session(now: datetime | pd.Timestamp | None = None) -> date:
    """The most recent session whose close is at or before `now`."""
    now_ts = pd.Timestamp.now(tz=TZ) if now is None else pd.Timestamp(now)
    if now_ts.tzinfo is None:
        raise ValueError("`now` must be tz-aware")
    cal = _calendar()
    day = now_ts.tz_convert(TZ).date()
    ts = pd.Timestamp(day)
    if not cal.is_session(ts):
        ts = cal.date_to_session(ts, direction="previous")
    if cal.session_close(ts) > now_ts:
        ts = cal.previous_session(ts)
    return ts.date()


def non_bar_datetimes(start: date, end: date, minutes: int = BAR_MINUTES) -> list[datetime]:
    """Naive New York datetimes of regular-hours bar starts (09:30 ... 15:30) that do
    not trade: every bar of a weekday holiday, and the afternoon bars of half days.

    These are the `exclusions` a weekday cron needs to become the exchange calendar.
    Read from the calendar's schedule in one pass (every process that loads the flows
    builds this list of ~400 datetimes, so it is kept cheap).
    """
    full_day = [
        (datetime.combine(date(2000, 1, 1), time(9, 30)) + timedelta(minutes=minutes * i)).time()
        for i in range(int(6.5 * 60 // minutes))
    ]
    first, last = calendar_bounds()
    day, stop = max(start, first), min(end, last)
    schedule = _calendar().schedule.loc[pd.Timestamp(day):pd.Timestamp(stop)]
    closes = {ts.date(): close.tz_convert(TZ) for ts, close in schedule["close"].items()}
    opens = {ts.date(): open_.tz_convert(TZ) for ts, open_ in schedule["open"].items()}
    out: list[datetime] = []
    while day <= stop:
        if day.weekday() < 5:
            if day not in closes:
                out.extend(datetime.combine(day, t) for t in full_day)
            elif closes[day].time() < time(16, 0) or opens[day].time() != time(9, 30):
                trading = {ts.time() for ts in pd.date_range(opens[day], closes[day], freq=f"{minutes}min",
                                                             inclusive="left")}
                out.extend(datetime.combine(day, t) for t in full_day if t not in trading)
        day += timedelta(days=1)
    return out
