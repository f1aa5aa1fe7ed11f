"""The TradingView alert flow's safety net: see `processing` for the two launch paths."""

import dagster as dg

from trading_assets.defs.trend_dmi.alerts import alert_partitions
from trading_assets.defs.trend_dmi.assets import trend_dmi_alert_job
from trading_assets.defs.trend_dmi.processing import sensor_requests
from trading_assets.resources.messaging import AlertQueueResource


@dg.sensor(
    job=trend_dmi_alert_job,
    name="trend_dmi_alert_sensor",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a run for every stored TradingView alert the worker has not processed "
                "(worker down, crash, restart); one run per alert (run key = the alert's partition).",
)
def trend_dmi_alert_sensor(context: dg.SensorEvaluationContext, alert_queue: AlertQueueResource):
    requests, keys = sensor_requests(alert_queue.get(), context.instance)
    if not requests:
        return dg.SkipReason("no stored alert is waiting for a run")
    return dg.SensorResult(run_requests=requests,
                           dynamic_partitions_requests=[alert_partitions.build_add_request(keys)])
