"""Bad input to `python -m trading_assets run` is a one-line error naming the problem and
what to do, exit 2, before anything runs: the ledger's bytes and the Dagster runs stay as
they were (they used to get a 15-19 line traceback). With only `--tick`, the header names
the tick's own day, not the last completed session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from trading_assets_tests.e2e.cli_world import TICK, World, alpaca_world


@pytest.fixture(scope="module")
def traded(tmp_path_factory) -> Iterator[tuple[World, str]]:
    """A paper world that has run TICK through the CLI (its stdout returned)."""
    with pytest.MonkeyPatch.context() as monkeypatch, alpaca_world(tmp_path_factory.mktemp("traded"), monkeypatch,
                                                                   broker="paper") as world:
        done = world.cli("--tick", TICK)
        assert done.returncode == 0, done.stdout + done.stderr
        yield world, done.stdout


def _ledger_bytes(data: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data.glob("ledger.sqlite*"))}


def test_with_only_tick_the_header_names_that_ticks_day(traded):
    _, stdout = traded
    assert stdout.splitlines()[0].startswith(f"trading_assets: ema_concentration_job on {TICK[:10]} (1 ticks)")


@pytest.mark.parametrize(("args", "env", "problem", "remedy"), [
    (["--tick", "2025-12-25-10:00"], {}, "2025-12-25 is an NYSE holiday (Christmas)", "--tick 2025-12-24-10:00"),
    (["--tick", "garbage"], {}, "--tick garbage: not a tick", "YYYY-MM-DD-HH:MM"),
    (["--day", "2099-01-02"], {}, "2099-01-02 is beyond the exchange calendar", "pick a session date"),
    (["--tick", TICK], {"TRADING_ENV": "nonsense"}, "TRADING_ENV='nonsense' is not available", "choose one of"),
    (["--flow", "knn_shadow"], {}, "--flow knn_shadow: not live yet", "knn_shadow/backtest"),
    (["--flow", "nope"], {}, "invalid choice: 'nope'", "ema_concentration"),
], ids=["holiday", "garbage", "beyond-calendar", "unknown-env", "flow-not-live", "unknown-flow"])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(traded, args, env, problem, remedy):
    world, _ = traded
    before = _ledger_bytes(world.data)
    with world.instance() as instance:
        runs_before = len(instance.get_runs())

    done = world.cli(*args, timeout=60, env=env)

    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and problem in line and remedy in line, line
    assert _ledger_bytes(world.data) == before
    with world.instance() as instance:
        assert len(instance.get_runs()) == runs_before

