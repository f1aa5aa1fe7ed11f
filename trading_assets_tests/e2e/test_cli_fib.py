"""`python -m trading_assets run --flow fib_retracement` as a real subprocess: it replays an
FX trade date of hourly ticks on the bundled EURUSD tape through the real Dagster job,
prints a row per tick with the deal, its take-profit and stop-loss, and the bracket that
fired, and leaves a ledger that agrees with the paper broker; a rerun places nothing; bad
days and ticks are one line and exit 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger

ROOT = Path(__file__).resolve().parents[2]
DAY = "2025-11-11"  # EURUSD buys at 02:00 New York and its stop-loss is hit in the 08:00 bar


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING_", "DAGSTER_HOME"))}
    env["TRADING_DATA_DIR"] = str(data)
    return subprocess.run([sys.executable, "-m", "trading_assets", "run", "--flow", "fib_retracement", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    data = tmp_path_factory.mktemp("fib")
    done = cli(data, "--day", DAY)
    assert done.returncode == 0, done.stdout + done.stderr
    return data, done.stdout


def test_a_day_prints_24_hourly_ticks_with_the_deal_its_brackets_and_the_exit(replayed):
    _, out = replayed
    lines = out.splitlines()
    assert lines[0] == f"trading_assets: fib_retracement_job on {DAY} (24 ticks), TRADING_ENV=local"
    rows = {line[:16]: line for line in lines[2:26]}
    assert len(rows) == 24 and min(rows) == "2025-11-10-17:00" and max(rows) == "2025-11-11-16:00"
    entry = rows["2025-11-11-02:00"]
    assert "EURUSD" in entry and "buy 1 @1.0891 entry filled, tp 1.0901 sl 1.0838" in entry
    assert "stop-loss hit: sell 1 @1.0838" in rows["2025-11-11-08:00"]
    assert "24/24 ticks succeeded" in out


def test_the_ledger_agrees_with_the_paper_broker_and_a_rerun_places_nothing(replayed):
    data, _ = replayed
    broker, ledger = PaperBroker(data / "paper_fib_retracement.sqlite"), SqliteLedger(data / "ledger.sqlite")
    placed = broker.orders()
    fills = ledger.transactions(flow="fib_retracement")
    assert sorted(fills["client_order_id"]) == sorted(o.client_order_id for o in placed if o.filled_qty)
    again = cli(data, "--day", DAY)
    assert again.returncode == 0 and "24/24 ticks succeeded" in again.stdout
    assert broker.orders() == placed
    assert len(ledger.transactions(flow="fib_retracement")) == len(fills)


@pytest.mark.parametrize(("args", "problem"), [
    (["--day", "2025-11-15"], "is in the FX weekend"),
    (["--tick", "2025-11-15-10:00"], "no FX bar"),
    (["--tick", "2025-11-18-10:30"], "is not the start of an hour"),
    (["--tick", "nonsense"], "not a tick"),
    (["--day", "2099-01-05"], "has not closed yet"),
    (["--day", "2025-11-12", "--tick", "2025-11-13-10:00"], "is not in FX trade date 2025-11-12"),
])
def test_bad_days_and_ticks_are_one_line_and_exit_2(tmp_path, args, problem):
    done = cli(tmp_path, *args)
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and problem in line, line
    assert not (tmp_path / "ledger.sqlite").exists()
