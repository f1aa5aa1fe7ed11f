"""`make run` killed with `kill -9` while the order POST is in flight must not block the
next run: the dead run keeps pool broker_api's only slot, so before the fix the rerun
waited for it forever (at 100% CPU, deaf to SIGTERM). The rerun must notice the dead run,
mark it failed, free the slot, and resolve the in-flight order: one order, ledger filled."""

import signal
import time

import dagster as dg

from trading_assets_tests.e2e.cli_world import TICK, alpaca_world, wait_until


def test_rerun_after_the_cli_is_killed_mid_post_finishes_with_one_order(tmp_path, monkeypatch):
    with alpaca_world(tmp_path, monkeypatch) as world:
        world.fake.fault_timeout_after_accept(delay=60)  # stored, then the answer is held
        first = world.start_cli("--tick", TICK)
        try:
            wait_until(lambda: world.fake.order_posts() == 1, 60, "the order POST reached the broker")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()

        started = time.monotonic()
        rerun = world.cli("--tick", TICK, timeout=60)
        took = time.monotonic() - started

        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert f"pid {first.pid}" in rerun.stderr and "is gone" in rerun.stderr, rerun.stderr
        [row] = [line for line in rerun.stdout.splitlines() if line.startswith(TICK)]
        assert "buy 173 TQQQ filled" in row, row
        world.assert_one_order_filled_once()
        with world.instance() as instance:
            runs = {r.run_id: r for r in instance.get_runs()}
            dead = [r for r in runs.values() if r.status == dg.DagsterRunStatus.FAILURE]
            assert len(dead) == 1 and len(runs) == 2, {r.run_id: r.status for r in runs.values()}
            failure = instance.all_logs(dead[0].run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
            assert f"pid {first.pid}" in failure[-1].message and "is gone" in failure[-1].message
            assert instance.event_log_storage.get_concurrency_run_ids() == set()  # nothing holds a slot
        assert took < 45, f"the rerun took {took:.0f} s"
