"""Market-hours partitions: one partition per 30-minute NYSE bar (09:30 ... 15:30).

The cron `*/30 9-16 * * 1-5` ticks every half hour of a weekday; excluding 09:00, 16:00
and 16:30 leaves the 13 regular-hours bar starts, each window 30 minutes long (the 16:00
tick still bounds the 15:30 window). Holidays and half-day afternoons are excluded bar by
bar from the exchange calendar, since Dagster's datetime exclusions must equal a window
start exactly. See dagster-notes: the naive `*/30 9-15` puts the 15:30 bar's end at the
next morning.
"""

from __future__ import annotations

import functools
from datetime import date

import dagster as dg
import pandas as pd

from trading_assets.core import calendar

PARTITION_FMT = "%Y-%m-%d-%H:%M"
PARTITIONS_START = "2025-01-02-09:30"


# Pure methods of the (immutable) definition that Dagster 1.13 recomputes on every call by
# iterating the cron schedule and its exclusions (~400 NYSE holiday and half-day bars here):
# the hash rebuilds a repr listing every exclusion and runs ~100 times a run (measured: 0.83 s
# -> 0.35 s a tick), and a key's start time / a key range's keys iterate croniter (2 ms a
# call, ~17 calls a tick). Each result is kept per definition object and per argument.
_MEMOISED = ("__hash__", "start_time_for_partition_key", "get_partition_keys_in_range")
_MEMO_LIMIT = 20_000


def _memoise_time_window_methods() -> None:
    cls = dg.TimeWindowPartitionsDefinition
    if not issubclass(cls, tuple):
        raise RuntimeError("TimeWindowPartitionsDefinition is no longer an immutable tuple record; "
                           "drop trading_assets' memoised methods")
    for name in _MEMOISED:
        original = getattr(cls, name)
        if getattr(original, "memoised_by_trading_assets", False):
            continue

        def memoised(self: dg.TimeWindowPartitionsDefinition, *args: object, _name: str = name,
                     _original=original) -> object:
            cache = self.__dict__.setdefault("_trading_assets_memo", {})
            key = (_name, *args)
            if key not in cache:
                if len(cache) > _MEMO_LIMIT:  # a long-lived webserver sees many ranges
                    cache.clear()
                cache[key] = _original(self, *args)
            return cache[key]

        functools.update_wrapper(memoised, original)
        memoised.memoised_by_trading_assets = True  # type: ignore[attr-defined]
        setattr(cls, name, memoised)


_memoise_time_window_methods()


def market_bar_partitions(start: str = PARTITIONS_START) -> dg.TimeWindowPartitionsDefinition:
    """30-minute regular-hours bars on the NYSE calendar, from `start`."""
    first = date.fromisoformat(start[:10])
    _, last = calendar.calendar_bounds()
    return dg.TimeWindowPartitionsDefinition(
        start=start,
        fmt=PARTITION_FMT,
        cron_schedule="*/30 9-16 * * 1-5",
        timezone=calendar.TZ,
        exclusions=["0 9 * * *", "0,30 16 * * *", *calendar.non_bar_datetimes(first, last)],
    )


market_bars_30m = market_bar_partitions()


def bar_window(partition_key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) in UTC of the bar a partition key names.

    Raises `MarketClosedError` with the reason (holiday, weekend, half day, off hours)
    for a key that is not a regular-hours NYSE bar.
    """
    try:
        local = pd.Timestamp(pd.to_datetime(partition_key, format=PARTITION_FMT)).tz_localize(calendar.TZ)
    except ValueError as exc:
        raise calendar.MarketClosedError(
            f"{partition_key!r} is not a bar key like 2025-01-06-09:30") from exc
    reason = calendar.closed_reason(local.date())
    if reason:
        raise calendar.MarketClosedError(f"no bar {partition_key}: {reason}")
    starts = calendar.session_bar_starts(local.date())
    if local not in starts:
        _, close = calendar.session_open_close(local.date())
        raise calendar.MarketClosedError(
            f"no bar {partition_key}: bars on {local.date()} start at "
            f"{starts[0]:%H:%M}..{starts[-1]:%H:%M} (close {close:%H:%M})")
    return local.tz_convert("UTC"), (local + pd.Timedelta(minutes=calendar.BAR_MINUTES)).tz_convert("UTC")


def bar_closing_at(moment: pd.Timestamp) -> str | None:
    """Partition key of the bar that ends exactly at `moment`, or None."""
    local = pd.Timestamp(moment).tz_convert(calendar.TZ).floor("min")
    start = local - pd.Timedelta(minutes=calendar.BAR_MINUTES)
    if calendar.closed_reason(start.date()):
        return None
    return start.strftime(PARTITION_FMT) if start in calendar.session_bar_starts(start.date()) else None


def session_partition_keys(day: date) -> list[str]:
    """All bar keys of one session, in order."""
    return [ts.strftime(PARTITION_FMT) for ts in calendar.session_bar_starts(day)]
