"""Hourly FX partitions for the IG Fibonacci flow: one per hourly bar while spot FX trades
(Sunday 17:00 to Friday 17:00 New York, less IG's Christmas and New Year closures; see
core/fx_hours.py), keyed by the bar's New York start (`2025-11-18-10:00`).

The cron `0 * * * 0-5` ticks every hour from Sunday to Friday; excluding Sunday before
17:00 and Friday from 17:00 leaves the FX week, and each closure hour is excluded by its
exact start (Dagster's datetime exclusions must equal a window start). A window ends at
the next cron tick even when that tick is excluded, so Friday's 16:00 bar ends at 17:00.
The autumn daylight-saving change repeats Sunday 01:00, which the weekend cron exclusion
drops only once: that naive hour is excluded as well (spring's skipped 02:00 is a Sunday
morning, closed anyway).
"""

from datetime import date, datetime

import dagster as dg
import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.calendar import MarketClosedError
from trading_assets.defs.partitions import PARTITION_FMT

FX_PARTITIONS_START = "2025-01-05-17:00"  # the first FX week of 2025 (Sunday evening)
FX_PARTITIONS_END_YEAR = 2027  # closures are listed up to the end of this year


def fx_hourly_partitions(start: str = FX_PARTITIONS_START) -> dg.TimeWindowPartitionsDefinition:
    first, last = date.fromisoformat(start[:10]), date(FX_PARTITIONS_END_YEAR, 12, 31)
    repeated = [h for h in fx_hours.repeated_hours(first, last) if fx_hours.closed_reason(h)]
    return dg.TimeWindowPartitionsDefinition(
        start=start,
        fmt=PARTITION_FMT,
        cron_schedule="0 * * * 0-5",
        timezone=fx_hours.TZ,
        exclusions=["0 0-16 * * 0", "0 17-23 * * 5", *repeated, *fx_hours.closure_hours(first, last)],
    )


fx_bars_1h = fx_hourly_partitions()


def fx_bar_window(partition_key: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) in UTC of the hourly FX bar a key names; MarketClosedError with the
    reason (weekend, closure, not an hour) for any other key."""
    try:
        local = pd.Timestamp(pd.to_datetime(partition_key, format=PARTITION_FMT))
    except ValueError as exc:
        raise MarketClosedError(f"{partition_key!r} is not an hourly bar key like 2025-11-18-10:00") from exc
    fx_hours.check_bar_start(local.to_pydatetime())
    start = local.tz_localize(fx_hours.TZ)
    return start.tz_convert("UTC"), (start + pd.Timedelta(hours=1)).tz_convert("UTC")


def fx_partition_of(moment: datetime) -> str:
    """The key of the hourly FX bar a moment falls in (where a bracket exit is booked)."""
    local = pd.Timestamp(moment).tz_convert(fx_hours.TZ).floor("h")
    return local.strftime(PARTITION_FMT)


def trade_date_keys(day: date) -> list[str]:
    """The partition keys of one FX trade date (17:00 New York the evening before to 16:00),
    in order; empty for a weekend or closure."""
    return [start.strftime(PARTITION_FMT) for start in fx_hours.bar_starts(day)]
