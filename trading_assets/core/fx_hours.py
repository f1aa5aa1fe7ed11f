"""When spot FX trades at IG, as hourly bars: from Sunday 17:00 to Friday 17:00 New York
time (the FX week; 22:00 in London), every hour, except the Christmas and New Year closures
(from 17:00 on 24 and 31 December to 17:00 on 25 December and 1 January).

Bars are named by their start in New York time. The week is anchored in New York because
that is where the FX day rolls over (17:00), which also keeps the daylight-saving shifts
right: a bar is always one wall-clock hour of the New York day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from trading_assets.core.calendar import MarketClosedError

TZ = "America/New_York"
ROLLOVER = time(17, 0)  # the FX day ends (and the week opens on Sunday) at 17:00 New York
CLOSURES = ((12, 25), (1, 1))  # month, day: closed from 17:00 the day before to 17:00 that day


def closed_reason(start: datetime) -> str | None:
    """Why no FX bar starts at `start` (a New York wall-clock hour), or None if one does."""
    local = start if start.tzinfo is None else start.astimezone(ZoneInfo(TZ)).replace(tzinfo=None)
    if local.minute or local.second or local.microsecond:
        return f"{local:%Y-%m-%d %H:%M} is not the start of an hour"
    trade_date = trade_date_of(local)
    weekday = trade_date.weekday()
    if weekday >= 5:
        return f"{local:%a %Y-%m-%d %H:%M} New York is in the FX weekend (Friday 17:00 to Sunday 17:00)"
    if (trade_date.month, trade_date.day) in CLOSURES:
        return f"{local:%Y-%m-%d %H:%M} New York is in IG's {_closure_name(trade_date)} closure"
    return None


def trade_date_of(local: datetime) -> date:
    """The FX trade date of a New York wall-clock time: from 17:00 on, the next day's."""
    return local.date() + timedelta(days=1) if local.time() >= ROLLOVER else local.date()


def _hours_of(day: date) -> list[datetime]:
    """The 24 naive New York hour starts of trade date `day`: 17:00 the evening before to 16:00."""
    first = datetime.combine(day - timedelta(days=1), ROLLOVER)
    return [first + timedelta(hours=h) for h in range(24)]


def _closure_name(day: date) -> str:
    return "Christmas" if day.month == 12 else "New Year"


def bar_starts(day: date) -> list[datetime]:
    """The naive New York starts of the FX bars of one trade date (17:00 the evening
    before to 16:00), in order; empty for a weekend or closure."""
    return [s for s in _hours_of(day) if closed_reason(s) is None]


def check_bar_start(start: datetime) -> None:
    """Raise MarketClosedError with the reason if no FX bar starts at `start`."""
    reason = closed_reason(start)
    if reason:
        raise MarketClosedError(f"no FX bar: {reason}")


def closure_hours(start: date, end: date) -> list[datetime]:
    """Naive New York starts of every hour inside a closure, for trade dates from `start`
    to `end`: the exclusions an hourly Sunday-to-Friday cron needs besides the weekend."""
    out: list[datetime] = []
    for year in range(start.year, end.year + 1):
        for month, day in CLOSURES:
            closed = date(year, month, day)
            if start <= closed <= end:
                out.extend(_hours_of(closed))
    return sorted(out)


def repeated_hours(start: date, end: date) -> list[datetime]:
    """Naive New York hours that the daylight-saving changes repeat (autumn, Sunday 01:00)
    or skip (spring, Sunday 02:00); both fall in the FX weekend. Dagster's weekend cron
    exclusion drops only the first of a repeated hour, so the partitions exclude these
    naive datetimes as well. US changes happen early on a Sunday, so only those are read."""
    zone = ZoneInfo(TZ)
    out = []
    day = start + timedelta(days=(6 - start.weekday()) % 7)  # the first Sunday
    while day <= end:
        for hour in range(4):
            moment = datetime.combine(day, time(hour))
            if moment.replace(tzinfo=zone, fold=0).utcoffset() != moment.replace(tzinfo=zone, fold=1).utcoffset():
                out.append(moment)
        day += timedelta(days=7)
    return out


def previous_bar_starts(last: datetime, count: int) -> list[datetime]:
    """The naive New York starts of the `count` FX bars up to and including the bar
    starting at `last`, oldest first (across weekends and closures)."""
    check_bar_start(last)
    out: list[datetime] = []
    day = trade_date_of(last)
    while len(out) < count:
        out[:0] = [b for b in bar_starts(day) if b <= last]
        day -= timedelta(days=1)
    return out[-count:]
