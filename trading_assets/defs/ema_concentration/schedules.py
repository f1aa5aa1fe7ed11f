"""When the EMA concentration flow runs: right after each regular-hours NYSE bar closes."""

import warnings

import dagster as dg
import pandas as pd

from trading_assets.core import calendar
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.ema_concentration.assets import FLOW, ema_concentration_job
from trading_assets.defs.partitions import PARTITIONS_START, bar_closing_at


def ema_concentration_schedule(context: dg.ScheduleEvaluationContext):
    moment = pd.Timestamp(context.scheduled_execution_time)
    key = bar_closing_at(moment)
    if key is None:
        reason = calendar.closed_reason(moment.tz_convert(calendar.TZ).date())
        return dg.SkipReason(reason or f"no bar closes at {moment.tz_convert(calendar.TZ):%Y-%m-%d %H:%M}")
    return dg.RunRequest(run_key=f"{FLOW}:{key}", partition_key=key)


with warnings.catch_warnings():  # schedule owners are a beta parameter; it would warn on every load
    warnings.simplefilter("ignore", dg.BetaWarning)
    ema_concentration_schedule = dg.schedule(
        job=ema_concentration_job,
        cron_schedule="0,30 9-16 * * 1-5",
        execution_timezone=calendar.TZ,
        name="ema_concentration_every_bar",
        description="Right after each regular-hours bar closes (10:00 ... 16:00 New York); "
                    "skips holidays, half-day afternoons and off-hours ticks.",
        tags=flow_tags(FLOW, "tick"),
        owners=OWNERS,
        # Dagster 1.13 shows no partition set for a hand-written schedule; say which partitions
        # it requests here, and each tick's run request carries its partition key.
        metadata={
            "partitions": "one per regular-hours NYSE 30-minute bar: 13 a day, 09:30 ... 15:30 New York "
                          "(7 on half days); none on weekends and holidays",
            "requests": "the bar that has just closed (the 10:00 tick requests 09:30, 16:00 requests 15:30)",
            "first_partition": PARTITIONS_START,
            "run_key": f"{FLOW}:<partition key> (a re-evaluated tick never starts a second run)",
        },
    )(ema_concentration_schedule)
