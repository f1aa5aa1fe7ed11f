"""When the Fibonacci flow runs: at the top of every hour of the FX week, for the hourly
bar that has just closed (the seed's Step Function ran hourly)."""

import warnings
from datetime import timedelta

import dagster as dg
import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.strategies.fib_retracement import FLOW
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.fib_retracement.assets import fib_retracement_signals_job
from trading_assets.defs.fib_retracement.partitions import FX_PARTITIONS_START
from trading_assets.defs.partitions import PARTITION_FMT


def bar_closed_at(moment: pd.Timestamp) -> tuple[str | None, str]:
    """(key of the FX bar that ends at `moment`, or None; why not)."""
    local = pd.Timestamp(moment).tz_convert(fx_hours.TZ).floor("min").tz_localize(None).to_pydatetime()
    start = local - timedelta(hours=1)
    reason = fx_hours.closed_reason(start)
    return (None, reason) if reason else (start.strftime(PARTITION_FMT), "")


def fib_retracement_schedule(context: dg.ScheduleEvaluationContext):
    key, reason = bar_closed_at(pd.Timestamp(context.scheduled_execution_time))
    if key is None:
        return dg.SkipReason(f"no FX bar closed: {reason}")
    return dg.RunRequest(run_key=f"{FLOW}:{key}", partition_key=key)


with warnings.catch_warnings():  # schedule owners are a beta parameter; it would warn on every load
    warnings.simplefilter("ignore", dg.BetaWarning)
    fib_retracement_schedule = dg.schedule(
        job=fib_retracement_signals_job,
        cron_schedule="0 * * * 0-5",
        execution_timezone=fx_hours.TZ,
        name="fib_retracement_every_hour",
        description="At the top of each hour of the FX week, for the bar that has just closed "
                    "(Sunday 18:00 ... Friday 17:00 New York); skips the weekend and IG's closures.",
        tags=flow_tags(FLOW, "tick"),
        owners=OWNERS,
        metadata={
            "partitions": "one per hourly FX bar: Sunday 17:00 to Friday 16:00 New York, less IG's Christmas "
                          "and New Year closures",
            "requests": "the bar that has just closed (the 10:00 tick requests 09:00)",
            "first_partition": FX_PARTITIONS_START,
            "run_key": f"{FLOW}:<partition key> (a re-evaluated tick never starts a second run)",
        },
    )(fib_retracement_schedule)
