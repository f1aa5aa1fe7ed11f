"""Whose process runs a Dagster run, is it still alive, and what to do when it is not.

A run whose process was killed (`kill -9`, OOM, a reboot) stays STARTED forever and keeps
the concurrency slots it claimed: with pool `broker_api` limited to 1, every later tick
then waits for a slot nobody will release. Dagster's run monitoring would mark such a
run failed, but only if the run launcher can check its worker, and `DefaultRunLauncher`
cannot. This module gives every local runner the same answer to "is this run's owner
alive?":

- `python -m trading_assets run` tags each run with its own pid, host and process start
  time (`OWNER_TAG`); a launched run's worker announces its pid in the engine event
  "Started process for run (pid: N)"; an untagged in-process run, in "Executing steps in
  process (pid: N)".
- `owner_alive()` checks that pid on this host and guards against pid reuse: the live
  process must have started when the owner did (or before the owner was seen).
- `reap_dead_runs()` marks runs with a dead owner failed and frees their slots (the CLI
  calls it before every tick and while it waits for a slot).
- `DeadRunAwareRunLauncher` is `DefaultRunLauncher` plus `check_run_worker_health` with
  the same logic, so the daemon's run monitoring (`dagster dev`, `dagster-daemon`) marks
  such runs failed itself, and `run_monitoring.free_slots_after_run_end_seconds` frees
  their slots (see ./dagster.yaml).

Runs whose owner is on another host, or not known, are never judged dead.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEventType, JobFailureData, RunFailureReason
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun, RunsFilter
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.tags import GRPC_INFO_TAG

OWNER_TAG = "trading_assets/owner"

# Engine events that name the process executing a run (dagster/_grpc/impl.py,
# dagster/_core/executor/in_process.py); other pid-carrying events name step workers.
_OWNER_EVENT_PREFIXES = ("Started process for run", "Executing steps in process")
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0", ""})
_START_SLACK_SECONDS = 2.0  # /proc start times are derived from a boot time rounded to 1 s
# Runs whose owner may still be running: a dead one here holds slots and blocks the pool.
_UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
               DagsterRunStatus.CANCELING]


@dataclass(frozen=True)
class Owner:
    """The process that executes a run, as far as the run's records tell."""

    pid: int
    host: str | None  # None: unknown, so never judged dead
    started_at: float | None = None  # the process's own start time (epoch s), from the tag
    seen_at: float | None = None  # when the process announced itself (engine event time)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host or 'an unknown host'}"


def process_start_time(pid: int) -> float | None:
    """Start time (epoch seconds) of process `pid` from /proc, None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, StopIteration):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _process_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def this_host() -> str:
    return socket.gethostname()


def _is_local(host: str | None) -> bool:
    return host is not None and (host in _LOCAL_HOSTS or host == this_host())


def owner_tag() -> dict[str, str]:
    """The tag the CLI puts on its runs: this process's pid, host and start time."""
    pid = os.getpid()
    return {OWNER_TAG: json.dumps({"pid": pid, "host": this_host(), "started_at": process_start_time(pid)})}


def owner_alive(owner: Owner) -> bool | None:
    """True/False if `owner` is (not) running on this host; None if that cannot be told."""
    if not _is_local(owner.host):
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if _process_state(owner.pid) in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    started = process_start_time(owner.pid)
    if started is not None:
        if owner.started_at is not None and abs(started - owner.started_at) > _START_SLACK_SECONDS:
            return False  # the pid now belongs to another process
        if owner.seen_at is not None and started > owner.seen_at + _START_SLACK_SECONDS:
            return False  # started after the owner announced itself: reused pid
    return True


def run_owner(instance: DagsterInstance, run: DagsterRun) -> Owner | None:
    """The process executing `run`: the CLI's tag, else the run worker's engine event."""
    tagged = run.tags.get(OWNER_TAG)
    if tagged:
        try:
            data = json.loads(tagged)
            return Owner(int(data["pid"]), data.get("host"), data.get("started_at"))
        except (ValueError, KeyError, TypeError):
            return None
    records = instance.event_log_storage.get_logs_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
    for record in records:
        event = record.dagster_event
        data = event.engine_event_data if event is not None else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is None or not record.message.startswith(_OWNER_EVENT_PREFIXES):
            continue
        return Owner(int(pid.value), _run_host(instance, run), seen_at=record.timestamp)
    return None


def _run_host(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Where an untagged run's process lives: its gRPC server's host for a launched run;
    this host for any run in local SQLite storage (only local processes write to it)."""
    grpc = run.tags.get(GRPC_INFO_TAG)
    if grpc:
        info = json.loads(grpc)
        return "localhost" if info.get("socket") else info.get("host")
    return this_host() if isinstance(instance.run_storage, SqliteRunStorage) else None


def describe_run(instance: DagsterInstance, run_id: str) -> str:
    """One phrase for a user: which run, which tick, its state and its process."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        return f"run {run_id[:8]} (deleted)"
    tick = run.tags.get("dagster/partition")
    owner = run_owner(instance, run)
    alive = owner_alive(owner) if owner is not None else None
    process = "process unknown" if owner is None else (
        f"{owner.describe()}, {'alive' if alive else 'gone' if alive is False else 'not checkable from here'}")
    return f"run {run_id[:8]} ({'tick ' + tick + ', ' if tick else ''}{run.status.value}, {process})"


@dataclass(frozen=True)
class Reaped:
    """A run found with a dead owner: whether it was marked failed, and its tick."""

    run_id: str
    partition: str | None
    owner: Owner
    marked_failed: bool


def dead_run_message(owner: Owner, by: str) -> str:
    return (f"{by}: the process running this run ({owner.describe()}) is gone (killed or crashed), so the "
            "run can never finish; marked failed and its concurrency slots freed. Rerun its partition: "
            "the ledger resolves any order that was in flight.")


def reap_dead_runs(instance: DagsterInstance, by: str = "trading_assets") -> list[Reaped]:
    """Mark unfinished runs whose owner process is gone failed, and free the slots of every
    run (unfinished or already failed) whose owner is gone. Live or unknown owners are left
    alone."""
    supports_slots = instance.event_log_storage.supports_global_concurrency_limits
    holders = instance.event_log_storage.get_concurrency_run_ids() if supports_slots else set()
    runs = list(instance.get_runs(filters=RunsFilter(statuses=_UNFINISHED)))
    finished_holders = holders - {r.run_id for r in runs}
    if finished_holders:
        runs += instance.get_runs(filters=RunsFilter(run_ids=list(finished_holders)))
    reaped = []
    for run in runs:
        owner = run_owner(instance, run)
        if owner is None or owner_alive(owner) is not False:
            continue
        current = instance.get_run_by_id(run.run_id)
        marked = current is not None and not current.is_finished
        if marked:
            instance.report_run_failed(current, dead_run_message(owner, by), JobFailureData(
                error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        if supports_slots and run.run_id in holders:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        if marked or run.run_id in holders:
            reaped.append(Reaped(run.run_id, run.tags.get("dagster/partition"), owner, marked))
    return reaped


class DeadRunAwareRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` whose run worker health the daemon's run monitoring can check.

    `check_run_worker_health` says FAILED only when the run's owner process is known to be
    gone (see `owner_alive`); anything it cannot judge is RUNNING, since monitoring marks
    every other status failed. It covers the CLI's in-process runs too (they carry
    `OWNER_TAG`), so a killed `make run` is cleaned up by `dagster dev` as well.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        owner = run_owner(self._instance, run)
        if owner is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no run worker process recorded yet")
        alive = owner_alive(owner)
        if alive is False:
            return CheckRunHealthResult(
                WorkerStatus.FAILED, f"the run worker ({owner.describe()}) is gone (killed or crashed); "
                                     "its concurrency slots are freed once the run is marked failed")
        if alive is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"cannot check {owner.describe()} from {this_host()}")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker {owner.describe()} is alive")

