"""Under a real `dagster-daemon` (what `make dev` runs), a run killed while its order POST
is in flight must end FAILED with its broker_api slot freed, so a rerun of the tick
completes and resolves the in-flight order: one order at the broker, ledger filled.

- A queued run's worker killed: the code server sees its child die and fails the run,
  but nothing freed the slot (`free_slots_after_run_end_seconds` was unset), so every
  later run waited forever.
- A killed `make run` (an in-process run no launcher knows): only the run launcher's
  health check (`DeadRunAwareRunLauncher`) can tell run monitoring that it is dead.
"""

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pytest

from trading_assets_tests.e2e.cli_world import (
    BIN,
    ROOT,
    TICK,
    World,
    alpaca_world,
    kill_processes_mentioning,
    stop_group,
    wait_until,
)

pytestmark = pytest.mark.daemon


def _launch(world: World) -> None:
    """Submit one run of the tick to the queue, as the UI's Materialize does."""
    launch = subprocess.run(
        [str(BIN / "dagster"), "job", "launch", "-w", str(ROOT / "workspace.yaml"), "-j", "ema_concentration_job",
         "--tags", f'{{"dagster/partition": "{TICK}"}}'],
        cwd=ROOT, env=world.env, capture_output=True, text=True, timeout=120)
    assert launch.returncode == 0, launch.stderr[-2000:]


def _worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's pid, from its "Started process for run (pid: N)" engine event."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if record.message.startswith("Started process for run"):
            return int(record.dagster_event.engine_event_data.metadata["pid"].value)
    return None


@contextmanager
def _daemon(world: World) -> Iterator[None]:
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                              cwd=ROOT, env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        yield
    finally:
        stop_group(daemon)
        kill_processes_mentioning(str(world.home))  # its code servers, if a run hung


def test_a_killed_run_worker_is_failed_by_the_daemon_and_the_rerun_places_one_order(tmp_path, monkeypatch):
    with alpaca_world(tmp_path, monkeypatch) as world:
        world.fake.fault_timeout_after_accept(delay=60)  # stored, then the answer is held
        with _daemon(world), world.instance() as instance:
            _launch(world)
            [first] = instance.get_runs()
            wait_until(lambda: world.fake.order_posts() == 1, 90, "the queued run's order POST reached the broker")
            pid = _worker_pid(instance, first.run_id)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

            started = time.monotonic()
            _launch(world)
            [rerun] = [r for r in instance.get_runs() if r.run_id != first.run_id]
            wait_until(lambda: instance.get_run_by_id(rerun.run_id).is_finished, 90, "the rerun finished")
            took = time.monotonic() - started

            rerun = instance.get_run_by_id(rerun.run_id)
            first = instance.get_run_by_id(first.run_id)
            assert rerun.status == dg.DagsterRunStatus.SUCCESS, rerun.status
            assert first.status == dg.DagsterRunStatus.FAILURE, first.status
            assert instance.event_log_storage.get_concurrency_run_ids() == set()
        world.assert_one_order_filled_once()
        assert took < 60, f"the rerun took {took:.0f} s"


def test_the_daemon_fails_a_killed_cli_run_and_frees_its_slot(tmp_path, monkeypatch):
    with alpaca_world(tmp_path, monkeypatch) as world:
        world.fake.fault_timeout_after_accept(delay=60)
        with _daemon(world), world.instance() as instance:
            cli = world.start_cli("--tick", TICK)
            try:
                wait_until(lambda: world.fake.order_posts() == 1, 60, "the CLI's order POST reached the broker")
            finally:
                cli.send_signal(signal.SIGKILL)
                cli.wait()
            [dead] = instance.get_runs()

            wait_until(lambda: instance.get_run_by_id(dead.run_id).is_finished
                       and not instance.event_log_storage.get_concurrency_run_ids(), 45,
                       "run monitoring failed the dead CLI run and freed its slot")
            [failure] = instance.all_logs(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert f"pid {cli.pid}" in failure.message and "is gone" in failure.message, failure.message

            _launch(world)
            [rerun] = [r for r in instance.get_runs() if r.run_id != dead.run_id]
            wait_until(lambda: instance.get_run_by_id(rerun.run_id).is_finished, 90, "the rerun finished")
            assert instance.get_run_by_id(rerun.run_id).status == dg.DagsterRunStatus.SUCCESS
        world.assert_one_order_filled_once()
