"""When the Fibonacci flow runs: at the top of every hour of the FX week, for the hourly
bar that has just closed (the seed's Step Function ran hourly)."""

from datetime import timedelta

import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.strategies.fib_retracement import FLOW
from trading_assets.defs.bar_schedules import bar_close_schedule
from trading_assets.defs.fib_retracement.assets import fib_retracement_job
from trading_assets.defs.fib_retracement.partitions import FX_PARTITIONS_START
from trading_assets.defs.partitions import PARTITION_FMT


def bar_closed_at(moment: pd.Timestamp) -> tuple[str | None, str]:
    """(key of the FX bar that ends at `moment`, or None; why not)."""
    local = pd.Timestamp(moment).tz_convert(fx_hours.TZ).floor("min").tz_localize(None).to_pydatetime()
    start = local - timedelta(hours=1)
    reason = fx_hours.closed_reason(start)
    return (None, f"no FX bar closed: {reason}") if reason else (start.strftime(PARTITION_FMT), "")


fib_retracement_schedule = bar_close_schedule(
    flow=FLOW,
    job=fib_retracement_job,
    cron_schedule="0 * * * 0-5",
    timezone=fx_hours.TZ,
    name="fib_retracement_every_hour",
    description="At the top of each hour of the FX week, for the bar that has just closed "
                "(Sunday 18:00 ... Friday 17:00 New York); skips the weekend and IG's closures.",
    closed_bar=bar_closed_at,
    metadata={
        "partitions": "one per hourly FX bar: Sunday 17:00 to Friday 16:00 New York, less IG's Christmas "
                      "and New Year closures",
        "requests": "the bar that has just closed (the 10:00 tick requests 09:00)",
        "first_partition": FX_PARTITIONS_START,
    },
)
