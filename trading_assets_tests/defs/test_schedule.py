"""The bar-close schedule: each bar runs right after it closes, nothing on a holiday."""

import dagster as dg
import pandas as pd
import pytest

from trading_assets.defs.ema_concentration.assets import ema_concentration_job
from trading_assets.defs.ema_concentration.schedules import ema_concentration_schedule

NY = "America/New_York"


@pytest.fixture(scope="module")
def repository():
    from trading_assets.definitions import defs

    return defs().get_repository_def()


def evaluate(moment: str, repository):
    context = dg.build_schedule_context(
        scheduled_execution_time=pd.Timestamp(moment, tz=NY).to_pydatetime(), repository_def=repository)
    return ema_concentration_schedule.evaluate_tick(context)


@pytest.mark.parametrize(
    ("moment", "partition"),
    [
        ("2025-11-26 10:00", "2025-11-26-09:30"),
        ("2025-11-26 16:00", "2025-11-26-15:30"),
        ("2025-11-28 13:00", "2025-11-28-12:30"),  # half day: last bar
        ("2025-03-10 10:00", "2025-03-10-09:30"),  # first day of EDT
    ],
)
def test_tick_requests_the_bar_that_just_closed(moment, partition, repository):
    result = evaluate(moment, repository)
    [request] = result.run_requests
    assert request.partition_key == partition
    assert request.run_key == f"ema_concentration:{partition}"


@pytest.mark.parametrize(
    ("moment", "reason"),
    [
        ("2025-11-27 10:00", "Thanksgiving"),
        ("2025-12-25 16:00", "Christmas"),
        ("2025-11-28 14:00", "no bar closes"),  # half-day afternoon
        ("2025-11-26 09:30", "no bar closes"),  # the open: nothing has closed yet
    ],
)
def test_no_run_on_holidays_or_when_no_bar_closed(moment, reason, repository):
    result = evaluate(moment, repository)
    assert not result.run_requests
    assert reason in result.skip_message


def test_schedule_targets_the_partitioned_in_process_job():
    assert ema_concentration_schedule.job_name == ema_concentration_job.name
    assert ema_concentration_schedule.execution_timezone == NY
