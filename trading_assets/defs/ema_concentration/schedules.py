"""When the EMA concentration flow runs: right after each regular-hours NYSE bar closes."""

import pandas as pd

from trading_assets.core import calendar
from trading_assets.defs.bar_schedules import bar_close_schedule
from trading_assets.defs.ema_concentration.assets import FLOW, ema_concentration_job
from trading_assets.defs.partitions import PARTITIONS_START, bar_closing_at


def _closed_bar(moment: pd.Timestamp) -> tuple[str | None, str]:
    key = bar_closing_at(moment)
    if key is not None:
        return key, ""
    local = moment.tz_convert(calendar.TZ)
    return None, calendar.closed_reason(local.date()) or f"no bar closes at {local:%Y-%m-%d %H:%M}"


ema_concentration_schedule = bar_close_schedule(
    flow=FLOW,
    job=ema_concentration_job,
    cron_schedule="0,30 9-16 * * 1-5",
    timezone=calendar.TZ,
    name="ema_concentration_every_bar",
    description="Right after each regular-hours bar closes (10:00 ... 16:00 New York); "
                "skips holidays, half-day afternoons and off-hours ticks.",
    closed_bar=_closed_bar,
    metadata={
        "partitions": "one per regular-hours NYSE 30-minute bar: 13 a day, 09:30 ... 15:30 New York "
                      "(7 on half days); none on weekends and holidays",
        "requests": "the bar that has just closed (the 10:00 tick requests 09:30, 16:00 requests 15:30)",
        "first_partition": PARTITIONS_START,
    },
)
