"""One shape for every scheduled flow: a tick right after each bar closes requests that bar
(run key `<flow>:<partition>`, so a re-evaluated tick never starts a second run), and a
tick at which no bar closed is skipped with the reason."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import dagster as dg
import pandas as pd

if TYPE_CHECKING:
    from dagster._core.definitions.schedule_definition import ExecutableDefinition

from trading_assets.defs.conventions import OWNERS, flow_tags

# the bar that ends at a moment: (its partition key, "") or (None, why there is none)
ClosedBar = Callable[[pd.Timestamp], tuple[str | None, str]]


def bar_close_schedule(*, flow: str, job: ExecutableDefinition, cron_schedule: str, timezone: str, name: str,
                       description: str, closed_bar: ClosedBar,
                       metadata: dict[str, str]) -> dg.ScheduleDefinition:
    def evaluate(context: dg.ScheduleEvaluationContext):
        key, reason = closed_bar(pd.Timestamp(context.scheduled_execution_time))
        if key is None:
            return dg.SkipReason(reason)
        return dg.RunRequest(run_key=f"{flow}:{key}", partition_key=key)

    with warnings.catch_warnings():  # schedule owners are a beta parameter; it would warn on every load
        warnings.simplefilter("ignore", dg.BetaWarning)
        # Dagster 1.13 shows no partition set for a hand-written schedule, so `metadata`
        # says which partitions it requests; each tick's run request carries its key.
        return dg.schedule(
            job=job, cron_schedule=cron_schedule, execution_timezone=timezone, name=name, description=description,
            tags=flow_tags(flow, "tick"), owners=OWNERS,
            metadata={**metadata, "run_key": f"{flow}:<partition key> (a re-evaluated tick never starts a second run)"},
        )(evaluate)
