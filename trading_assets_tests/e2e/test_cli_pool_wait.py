"""A tick whose broker step waits for a slot held by a *live* run (here a `make run`
frozen with SIGSTOP while its order POST is in flight): the wait must say which pool and
which run holds it, give up after `--pool-wait` seconds (exit 3), stop on SIGTERM or
Ctrl-C (exit 143 / 130) without burning a core, and leave no claim and no ledger entry
behind. Before the fix the same wait spun at 100% CPU, unbounded and deaf to signals."""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from trading_assets_tests.e2e.cli_world import (
    FLOW,
    LATER_TICK,
    ROOT,
    TICK,
    World,
    alpaca_world,
    cpu_seconds,
    wait_until,
)


@pytest.fixture(scope="module")
def frozen_holder(tmp_path_factory) -> Iterator[tuple[World, subprocess.Popen[str]]]:
    """A world whose pool broker_api is held by a live CLI stopped inside the order POST."""
    with pytest.MonkeyPatch.context() as monkeypatch, alpaca_world(tmp_path_factory.mktemp("held"),
                                                                   monkeypatch) as world:
        world.fake.fault_timeout_after_accept(delay=300)
        holder = world.start_cli("--tick", TICK, stderr=world.data.parent / "holder.err")
        try:
            wait_until(lambda: world.fake.order_posts() == 1, 60, "the holder's order POST reached the broker")
            holder.send_signal(signal.SIGSTOP)
            yield world, holder
        finally:
            holder.kill()
            holder.wait()


def _assert_left_nothing_behind(world: World) -> None:
    """The waiting tick planned nothing, and its run is failed without any slot or claim."""
    assert world.ledger().intents(FLOW, LATER_TICK) == []
    with world.instance() as instance:
        info = instance.event_log_storage.get_concurrency_info("broker_api")
        waiters = [r.run_id for r in instance.get_runs() if r.tags.get("dagster/partition") == LATER_TICK]
        assert waiters and all(instance.get_run_by_id(r).is_finished for r in waiters)
        assert not {s.run_id for s in info.claimed_slots} & set(waiters)
        assert not {p.run_id for p in info.pending_steps} & set(waiters)


def test_waiting_for_a_live_holder_gives_up_after_pool_wait(frozen_holder):
    world, holder = frozen_holder
    started = time.monotonic()
    waiter = world.cli("--tick", LATER_TICK, "--pool-wait", "2", timeout=60)
    took = time.monotonic() - started

    assert waiter.returncode == 3, waiter.stdout + waiter.stderr
    said = waiter.stderr
    assert "waiting for pool broker_api" in said and f"pid {holder.pid}" in said and "alive" in said, said
    assert "gave up after 2 s waiting for pool broker_api" in said, said
    [row] = [line for line in waiter.stdout.splitlines() if line.startswith(LATER_TICK)]
    assert "FAILED: PoolWaitTimeout: gave up" in row, row
    assert took < 30, f"{took:.0f} s"
    _assert_left_nothing_behind(world)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "ctrl-c"])
def test_a_signal_stops_a_waiting_tick_promptly_and_the_wait_does_not_spin(frozen_holder, sig, tmp_path):
    world, holder = frozen_holder
    err = tmp_path / "stderr.txt"
    waiter = world.start_cli("--tick", LATER_TICK, stderr=err)
    try:
        wait_until(lambda: "waiting for pool broker_api" in err.read_text(), 60, "the tick says it waits")
        cpu_before = cpu_seconds(waiter.pid)
        time.sleep(2)
        spun = cpu_seconds(waiter.pid) - cpu_before
        waiter.send_signal(sig)
        code = waiter.wait(timeout=15)
    finally:
        waiter.kill()
    said = err.read_text()

    assert spun < 0.5, f"the wait used {spun:.2f} s of CPU in 2 s"
    assert code == 128 + sig, said
    assert f"stopped by {sig.name}" in said and "held by run" in said and f"pid {holder.pid}" in said, said
    _assert_left_nothing_behind(world)


def test_a_launched_run_of_the_job_bounds_its_pool_wait_too(frozen_holder, tmp_path):
    """Runs the daemon or `dagster dev` launch use the job's own executor, not the CLI's
    wrapper: `dagster job execute` runs the job that way. Its wait is bounded as well."""
    world, holder = frozen_holder
    config = tmp_path / "run.yaml"
    config.write_text("execution:\n  config:\n    pool_wait_seconds: 2\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "trading_assets.definitions",
         "-j", "ema_concentration_job", "-c", str(config), "--tags", json.dumps({"dagster/partition": LATER_TICK})],
        cwd=ROOT, env=world.env, capture_output=True, text=True, timeout=90)
    took = time.monotonic() - started
    said = done.stdout + done.stderr
    assert done.returncode != 0, said
    assert "PoolWaitTimeout" in said and "gave up after 2 s waiting for pool broker_api" in said, said[-3000:]
    assert f"pid {holder.pid}" in said, said[-3000:]
    assert took < 60, f"{took:.0f} s"
    _assert_left_nothing_behind(world)
