"""Telling people: run failures (a sensor over every job), and the tick's own problems
(rejected orders, the kill switch, position drift) through the `notifier` resource: SNS
in aws mode, the log locally.

A notification that cannot be sent never masks what happened: the failure to notify is
logged and the original outcome (a failed run, a rejected order) stands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from trading_assets.core.messaging import Notification, NotificationKind
from trading_assets.resources.messaging import NotifierResource


def tell(context: dg.AssetExecutionContext | dg.RunFailureSensorContext, notifier: NotifierResource,
         kind: NotificationKind, subject: str, message: str, *, flow: str | None = None,
         details: Mapping[str, Any] | None = None) -> bool:
    """Send one notification; True if it went out (a failure is logged, never raised)."""
    log = getattr(context, "log", None)
    try:
        notifier.get().notify(Notification(kind, subject, message, details=dict(details or {}), flow=flow))
        return True
    except Exception as exc:
        if log is not None:
            log.warning(f"could not send the {kind.value} notification ({type(exc).__name__}: {exc})")
        return False


def _root_cause(error: Any) -> str:
    """The innermost error's type and first line (Dagster wraps a step's exception)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    cls = getattr(error, "cls_name", None)
    first = (error.message or "").strip().splitlines()[0] if error.message else ""
    return f"{cls}: {first.split(': ', 1)[-1]}" if cls else first


@dg.run_failure_sensor(
    name="notify_on_run_failure",
    description="Every failed run of every job is sent to the notifier (SNS topic in aws mode).",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def notify_on_run_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    partition = run.tags.get("dagster/partition")
    step_errors = [f"{e.step_key}: {_root_cause(e.event_specific_data.error)}"
                   for e in context.get_step_failure_events()
                   if e.event_specific_data and getattr(e.event_specific_data, "error", None)]
    message = context.failure_event.message or "run failed"
    tell(context, notifier, NotificationKind.RUN_FAILURE,
         f"{run.job_name} failed" + (f" at {partition}" if partition else ""),
         "\n".join([message, *step_errors]),
         flow=run.tags.get("flow") or run.job_name.removesuffix("_job"),
         details={"run_id": run.run_id, "job": run.job_name, "partition": partition, "steps": step_errors})
