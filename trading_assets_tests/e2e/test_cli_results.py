"""What a tick's line says when it did not simply trade: a failure shows its root cause on
one line (not Dagster's wrapper cut at 100 characters), and an order the broker rejected
says so with the broker's reason (it was labelled "(already placed)" on its first run)."""

from trading_assets_tests.e2e.cli_world import FLOW, LATER_TICK, TICK, alpaca_world


def test_a_failed_tick_prints_its_root_cause_on_one_line(tmp_path, monkeypatch):
    with alpaca_world(tmp_path, monkeypatch, broker="paper") as world:
        done = world.cli("--tick", TICK, env={"TRADING_KILL_SWITCH": "1"})

    assert done.returncode == 1, done.stdout + done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith(TICK)]
    assert row.split(None, 1)[1] == (f"FAILED: KillSwitchEngaged: kill switch engaged: 1 order(s) for {FLOW} "
                                     f"{TICK} not placed"), row
    assert "DagsterExecutionStepExecutionError" not in done.stdout + done.stderr


def test_a_rejected_order_says_rejected_with_the_brokers_reason(tmp_path, monkeypatch):
    reason = "asset TQQQ is not tradable for this account"
    with alpaca_world(tmp_path, monkeypatch) as world:
        world.fake.fault_reject_next(reason)
        done = world.cli("--tick", TICK)

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.startswith(TICK)]
    assert "buy 173 TQQQ rejected" in lines[at] and "already placed" not in lines[at], lines[at]
    assert lines[at + 1].strip() == f"rejected by the broker: buy 173 TQQQ: {reason}", lines[at + 1]
    [intent] = world.ledger().intents(FLOW, TICK)
    assert (intent.status, intent.reason) == ("rejected", reason)


def test_a_tick_without_orders_says_why_and_an_old_tick_shows_no_false_equity(tmp_path, monkeypatch):
    with alpaca_world(tmp_path, monkeypatch, broker="paper") as world:
        done = world.cli("--tick", TICK, "--tick", LATER_TICK)  # buys, then holds
        older = world.cli("--tick", "2025-11-18-12:00")  # a backfill after the newer ticks

    assert done.returncode == 0 and older.returncode == 0, done.stdout + done.stderr + older.stderr
    [held] = [line for line in done.stdout.splitlines() if line.startswith(LATER_TICK)]
    assert "- TQQQ already held (173); not adding" in held, held
    [row] = [line for line in older.stdout.splitlines() if line.startswith("2025-11-18-12:00")]
    assert f"- older than newest tick {LATER_TICK}" in row and row.rstrip().endswith(" -"), row
