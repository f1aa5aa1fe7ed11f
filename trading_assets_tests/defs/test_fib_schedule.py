"""The Fibonacci flow's hourly schedule: each FX bar runs right after it closes, nothing
in the weekend or IG's closures, and every request names a real partition."""

import dagster as dg
import pandas as pd
import pytest

from trading_assets.defs.fib_retracement.partitions import fx_bars_1h
from trading_assets.defs.fib_retracement.schedules import fib_retracement_schedule

NY = "America/New_York"


def evaluate(moment: str):
    from trading_assets.definitions import defs

    context = dg.build_schedule_context(scheduled_execution_time=pd.Timestamp(moment, tz=NY).to_pydatetime(),
                                        repository_def=defs().get_repository_def())
    return fib_retracement_schedule.evaluate_tick(context)


@pytest.mark.parametrize(("moment", "partition"), [
    ("2025-11-12 10:00", "2025-11-12-09:00"),
    ("2025-11-09 18:00", "2025-11-09-17:00"),  # the week's first bar
    ("2025-11-14 17:00", "2025-11-14-16:00"),  # the week's last bar
    ("2025-12-25 18:00", "2025-12-25-17:00"),  # reopened after Christmas
])
def test_each_hour_requests_the_bar_that_just_closed(moment, partition):
    [request] = evaluate(moment).run_requests
    assert request.partition_key == partition and request.run_key == f"fib_retracement:{partition}"
    assert fx_bars_1h.has_partition_key(partition)


@pytest.mark.parametrize(("moment", "why"), [
    ("2025-11-14 18:00", "FX weekend"),
    ("2025-11-09 17:00", "FX weekend"),  # the open: no bar has closed yet
    ("2025-12-25 10:00", "Christmas"),
])
def test_closed_hours_are_skipped_with_the_reason(moment, why):
    result = evaluate(moment)
    assert not result.run_requests and why in result.skip_message
