"""End to end through a real `dagster-daemon`: a partitioned run submitted to the queue is
dequeued and launched by the daemon, and the tick's order lands in the ledger."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets_tests.e2e.cli_world import stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TICK = "2025-11-18-12:30"  # TQQQ turns bullish in the replay data

pytestmark = pytest.mark.daemon


@pytest.fixture
def world(tmp_path, monkeypatch):
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local"}
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml reads it
    with _instance(home):
        pass  # create the SQLite storages once, before two processes race to migrate them
    return home, data, env


def test_daemon_launches_a_queued_partition_run_and_the_order_reaches_the_ledger(world):
    home, data, env = world
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        launch = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", str(ROOT / "workspace.yaml"), "-j", "ema_concentration_job",
             "--tags", f'{{"dagster/partition": "{TICK}"}}'],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
        )
        assert launch.returncode == 0, launch.stderr[-2000:]
        with _instance(home) as instance:
            [run] = instance.get_runs()
            assert run.tags["dagster/partition"] == TICK
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                run = instance.get_run_by_id(run.run_id)
                if run.is_finished:
                    break
                time.sleep(1)
            statuses = [e.dagster_event.event_type_value for e in instance.all_logs(run.run_id) if e.dagster_event]
            # ENQUEUED: it went through the run queue, which only the daemon drains.
            assert "PIPELINE_ENQUEUED" in statuses and "PIPELINE_STARTING" in statuses, sorted(set(statuses))
            assert run.status == dg.DagsterRunStatus.SUCCESS, statuses
    finally:
        stop_group(daemon)
    ledger = SqliteLedger(data / "ledger.sqlite")
    [intent] = ledger.intents("ema_concentration", TICK)
    assert (intent.symbol, intent.side.value, intent.status) == ("TQQQ", "buy", "filled")
    assert len(PaperBroker(data / "paper_ema_concentration.sqlite").orders()) == 1


def _instance(home: Path):
    return dg.DagsterInstance.from_config(str(home))
