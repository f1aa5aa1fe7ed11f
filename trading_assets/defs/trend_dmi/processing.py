"""Two launch paths, one outcome, for stored TradingView alerts.

- The fast path (`AlertWorker`, `python -m trading_assets worker`): a warm process that
  long-polls the alert queue and executes each alert's Dagster run at once, in process,
  against the instance (a real run, in the UI, no new process per run).
- The safety net (`trend_dmi_alert_sensor`): drains alerts that were stored but not
  processed (worker down, crash, restart), one run per alert with the alert's partition
  key as run key.

Receiving an alert is its claim: the queue hides it from every other consumer until it
is acked or released, and keeps each symbol's alerts in order (FIFO groups). Both paths
tag their runs with the alert's partition key (`trend_dmi/alert`) and neither starts a
run for an alert that has a successful or a live one; a failed run, or one whose process
died (found by `run_health.reap_dead_runs`), is run again. Processing an alert twice is
harmless anyway: the transition is recorded once per alert and orders are exactly-once
per (alert, leg).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

from trading_assets.core.messaging import AlertQueue, QueuedAlert
from trading_assets.defs.conventions import BROKER_POOL
from trading_assets.defs.trend_dmi.alerts import FLOW, alert_partition_key, alert_partitions, alert_run_config
from trading_assets.pool_wait import PoolWait, bounded_pool_waits

log = logging.getLogger(__name__)
ALERT_TAG = "trend_dmi/alert"  # the alert's partition key, on every run of it
SENSOR_GRACE = timedelta(seconds=10)  # younger alerts are the worker's
RETRY_DELAY_SECONDS = 5  # a failed run's alert comes back after this (DLQ after max receives)
RUNNING_DELAY_SECONDS = 10  # an alert whose run is still going is looked at again after this
POOL_WAIT_SECONDS = 300.0  # as the job's executor: a broker_api slot held longer fails the run, naming the holder
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_tags(msg: QueuedAlert, key: str, path: str) -> dict[str, str]:
    return {ALERT_TAG: key, "alert_id": msg.alert_id, "ticker": msg.group, "flow": FLOW,
            "trend_dmi/launched_by": path}


def alert_runs(instance: dg.DagsterInstance, key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={ALERT_TAG: key})))


def alert_status(instance: dg.DagsterInstance, key: str) -> tuple[str, int]:
    """("done" | "running" | "todo", runs so far) for an alert. A run that failed, was
    canceled, or whose process is gone (marked failed by `reap_dead_runs` first) does not
    count as done: the alert is run again (safely: its transition is recorded once and its
    orders are exactly-once)."""
    runs = alert_runs(instance, key)
    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs):
        return "done", len(runs)
    if any(not r.is_finished for r in runs):
        return "running", len(runs)
    return "todo", len(runs)


@dataclass
class Processed:
    alert_id: str
    partition_key: str
    success: bool
    seconds: float
    run_id: str | None = None
    note: str = ""


class AlertWorker:
    """Receive -> run the alert's job in process -> ack (or release to retry)."""

    def __init__(self, queue: AlertQueue, job: dg.JobDefinition, instance: dg.DagsterInstance,
                 retry_delay_seconds: int = RETRY_DELAY_SECONDS) -> None:
        self.queue, self.job, self.instance = queue, job, instance
        self.retry_delay_seconds = retry_delay_seconds
        self.stopping = threading.Event()

    def _pool_waits(self) -> PoolWait:
        """execute_in_process ignores the job's executor, so its pool waits are bounded
        here (without this a step blocked on broker_api spins a core; see pool_wait.py)."""
        from trading_assets.run_health import reap_dead_runs

        return PoolWait(timeout=POOL_WAIT_SECONDS, report=log.warning,
                        reap=lambda instance: len(reap_dead_runs(instance, by="the alert worker")))

    def process(self, msg: QueuedAlert) -> Processed:
        from trading_assets.run_health import owner_tag, reap_dead_runs

        t0 = time.perf_counter()
        key = alert_partition_key(msg.body)
        status, attempts = alert_status(self.instance, key)
        if status == "running":  # unless its worker died: then that run is marked failed, not running
            reap_dead_runs(self.instance, by="the alert worker")
            status, attempts = alert_status(self.instance, key)
        if status == "done":
            self.queue.ack(msg)  # another path ran it (the sensor, or this worker before a crash)
            return Processed(msg.alert_id, key, True, time.perf_counter() - t0, note="already done")
        if status == "running":
            self.queue.release(msg, delay_seconds=RUNNING_DELAY_SECONDS)
            return Processed(msg.alert_id, key, False, time.perf_counter() - t0, note="its run is still going")
        self.instance.add_dynamic_partitions(alert_partitions.name, [key])
        with bounded_pool_waits(self._pool_waits()):
            result = self.job.execute_in_process(
                partition_key=key, instance=self.instance, raise_on_error=False,
                run_config={**alert_run_config(msg.body), **QUIET},
                tags={**run_tags(msg, key, "worker"), **owner_tag(), "dagster/run_key": f"{key}:{attempts}"})
        if result.success:
            self.queue.ack(msg)
        else:
            log.warning("alert %s: run %s failed; back on the queue in %d s (receive %d)", msg.alert_id,
                        result.run_id, self.retry_delay_seconds, msg.receive_count)
            self.queue.release(msg, delay_seconds=self.retry_delay_seconds)
        return Processed(msg.alert_id, key, result.success, time.perf_counter() - t0, result.run_id)

    def run_once(self, wait_seconds: float = 1.0) -> list[Processed]:
        return [self.process(m) for m in self.queue.receive(max_messages=1, wait_seconds=wait_seconds)]

    def run_forever(self, wait_seconds: float = 1.0) -> None:
        while not self.stopping.is_set():
            for done in self.run_once(wait_seconds):
                log.info("alert %s -> %s in %.2f s (run %s)", done.alert_id, "ok" if done.success else "FAILED",
                         done.seconds, done.run_id)


def sensor_requests(queue: AlertQueue, instance: dg.DagsterInstance, now: datetime | None = None,
                    batch: int = 10) -> tuple[list[dg.RunRequest], list[str]]:
    """The safety net's decisions for one tick: a run request for each stored alert past
    the worker's grace that is not done and not running (its run key counts the attempts,
    so a failed run's alert can be run again), ack for those that are done."""
    now = now or datetime.now(UTC)
    requests, keys = [], []
    for msg in queue.receive(max_messages=batch, wait_seconds=0):
        key = alert_partition_key(msg.body)
        status, attempts = alert_status(instance, key)
        if status == "done":
            queue.ack(msg)
        elif status == "running" or (msg.sent_at is not None and now - msg.sent_at < SENSOR_GRACE):
            queue.release(msg, delay_seconds=0 if status == "todo" else RUNNING_DELAY_SECONDS)
        else:
            requests.append(dg.RunRequest(run_key=f"{key}:{attempts}", partition_key=key,
                                          run_config=alert_run_config(msg.body), tags=run_tags(msg, key, "sensor")))
            keys.append(key)
            queue.release(msg, delay_seconds=30)  # acked next time, once its run has succeeded
    return requests, keys


def worker_for(env: str, resources: dict[str, object] | None = None) -> AlertWorker:
    """The warm worker of `env`: its queue, the flow's job with the environment's
    resources (or `resources`), and the Dagster instance of DAGSTER_HOME (so its runs show
    in the UI)."""
    from trading_assets.defs.resources import resources_for
    from trading_assets.defs.trend_dmi.assets import FLOW_ASSETS, trend_dmi_alert_job
    from trading_assets.resources.messaging import alert_queue_resource

    job = dg.Definitions(assets=FLOW_ASSETS, jobs=[trend_dmi_alert_job],
                         resources=resources or resources_for(env)).resolve_job_def(trend_dmi_alert_job.name)
    instance = worker_instance()
    keep_connections_open(instance)
    remember_partitions(instance)
    ensure_pool(instance, BROKER_POOL)
    return AlertWorker(alert_queue_resource(env).get(), job, instance)


def ensure_pool(instance: dg.DagsterInstance, pool: str) -> None:
    """Create the pool's row at its default limit before the first run needs it. Two
    workers' first runs creating it at once collide on PostgreSQL, and Dagster 1.13's
    fallback then fails in the aborted transaction (InFailedSqlTransaction), failing one
    run; so each worker does it at start, only while the row is missing."""
    storage = instance.event_log_storage
    for attempt in range(3):
        if pool in storage.get_concurrency_keys():
            return
        try:
            storage.initialize_concurrency_limit_to_default(pool)
            return
        except Exception:  # the racing insert's error class is the database driver's
            if attempt == 2:
                raise
            time.sleep(0.1)


NO_CAPTURE = {"compute_logs": {"module": "dagster._core.storage.noop_compute_log_manager",
                               "class": "NoOpComputeLogManager"}}


def worker_instance() -> dg.DagsterInstance:
    """DAGSTER_HOME's instance (ephemeral without one), as dagster.yaml configures it,
    except that the worker's runs do not capture stdout/stderr (measured: 0.29 -> 0.23 s of
    CPU a run; the capture forks two `tail` processes a run and, in aws mode, uploads to
    S3). Their structured event logs (every context.log line, every event) are in the
    instance as for any run; the worker's own output is its log. TRADING_WORKER_CAPTURE_LOGS=1
    keeps the capture."""
    from dagster._core.instance.ref import InstanceRef

    from trading_assets import settings

    home = settings.dagster_home()
    if not home:
        return dg.DagsterInstance.ephemeral()
    if settings.worker_captures_logs():
        return dg.DagsterInstance.get()
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(home, overrides=NO_CAPTURE))


def remember_partitions(instance: dg.DagsterInstance) -> None:
    """Dagster 1.13 asks the storage whether the run's dynamic partition exists ~28 times
    a run (one query each, ~1 ms); this worker adds each alert's partition itself right
    before its run, so on this instance object a key found once is remembered (only
    found keys: a missing one is always asked again)."""
    asked = instance.has_dynamic_partition
    known: set[tuple[str, str]] = set()

    def has_dynamic_partition(partitions_def_name: str, partition_key: str) -> bool:
        if (partitions_def_name, partition_key) in known:
            return True
        found = asked(partitions_def_name, partition_key)
        if found:
            known.add((partitions_def_name, partition_key))
        return found

    instance.has_dynamic_partition = has_dynamic_partition  # type: ignore[method-assign]


def keep_connections_open(instance: dg.DagsterInstance) -> None:
    """A warm worker is long-lived like the webserver, so its instance keeps a pooled
    connection (PostgreSQL; a no-op on SQLite) instead of one new authenticated
    connection per event: measured 1.44 s -> 0.39 s a run on PostgreSQL 15."""
    instance.optimize_for_webserver(statement_timeout=30_000, pool_recycle=3600, max_overflow=4)
