"""The safety net through a real `dagster-daemon`: an alert stored while no worker is up
is picked up by the sensor, run once (run key = its partition), its order placed once,
and the alert acked; the next sensor ticks start nothing more. The daemon killed -9 while
its sensor's run is going, then restarted: still one order, the ledger reconciled."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.adapters.sqlite.queue import SqliteAlertQueue
from trading_assets.adapters.tradingview.alerts import alert_content_id
from trading_assets.core.execution import account_key, reconcile
from trading_assets.core.ports import OPEN_INTENT_STATUSES
from trading_assets.defs.trend_dmi.alerts import alert_partition_key
from trading_assets.gateway.envelope import encode
from trading_assets_tests.e2e.cli_world import stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.daemon


def _stored_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, SqliteAlertQueue, str]:
    """A fresh instance and one long entry for MNQ1! stored in the queue, as the gateway
    stores it, with no worker up; (home, data, queue, the alert's partition key)."""
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    data.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)):
        pass  # create the storages once, before processes race to migrate them
    payload = json.loads((ROOT / "trading_assets" / "data" / "tradingview_alerts.json").read_text())["alerts"][
        "long_entry"]
    payload["market_data"]["timenow"] = (datetime.now(UTC) - timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = encode(alert_content_id(payload), "MNQ1!", datetime.now(UTC), "application/json", "127.0.0.1", payload)
    queue = SqliteAlertQueue(data / "alerts.sqlite")
    assert queue.put(alert_content_id(payload), body, "MNQ1!")
    return home, data, queue, alert_partition_key(body)


def _daemon(home: Path, data: Path) -> subprocess.Popen:
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local"}
    return subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _alert_runs(instance: dg.DagsterInstance, key: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"trend_dmi/alert": key})))


def test_the_sensor_runs_an_alert_no_worker_took_exactly_once(tmp_path, monkeypatch):
    home, data, queue, key = _stored_alert(tmp_path, monkeypatch)
    daemon = _daemon(home, data)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline, run = time.monotonic() + 150, None
            while time.monotonic() < deadline:
                runs = _alert_runs(instance, key)
                if runs and runs[0].is_finished and queue.depth() == 0:
                    run = runs[0]
                    break
                time.sleep(1)
            assert run is not None, f"no finished run for {key} (queue depth {queue.depth()})"
            assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["trend_dmi/launched_by"] == "sensor"
            time.sleep(12)  # two more sensor ticks: nothing new to start
            assert len(_alert_runs(instance, key)) == 1
    finally:
        stop_group(daemon)
    [order] = PaperBroker(data / "paper_trend_dmi.sqlite").orders()
    assert (order.symbol[:3], order.side.value, order.qty) == ("MNQ", "buy", 1.0)


def test_the_daemon_killed_9_mid_run_then_restarted_places_one_order(tmp_path, monkeypatch):
    home, data, queue, key = _stored_alert(tmp_path, monkeypatch)
    first = _daemon(home, data)
    second = None
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                runs = _alert_runs(instance, key)
                if runs and (runs[0].status == dg.DagsterRunStatus.STARTED or runs[0].is_finished):
                    break  # a fast machine may finish the run between two looks: the kill then follows it
                time.sleep(0.05)
            assert runs, "the sensor's run never started"
            first.send_signal(signal.SIGKILL)  # the daemon dies; its run's process is orphaned mid-run
            first.wait(timeout=10)
            second = _daemon(home, data)
            deadline, finished = time.monotonic() + 150, None
            while time.monotonic() < deadline:
                runs = _alert_runs(instance, key)
                if any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs) and queue.depth() == 0:
                    finished = runs
                    break
                time.sleep(0.5)
            assert finished, f"not done: {[(r.run_id[:8], r.status) for r in _alert_runs(instance, key)]}"
            time.sleep(12)  # two more sensor ticks of the new daemon: nothing more
            assert len(_alert_runs(instance, key)) == len(finished)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # the orphaned run worker, if it is still there
        if second is not None:
            stop_group(second)
    broker = PaperBroker(data / "paper_trend_dmi.sqlite")
    [order] = broker.orders()
    assert (order.symbol[:3], order.side.value, order.qty, order.status.value) == ("MNQ", "buy", 1.0, "filled")
    ledger = SqliteLedger(data / "ledger.sqlite")
    assert not [i for i in ledger.intents("trend_dmi") if i.status in OPEN_INTENT_STATUSES]
    acct = account_key(broker, broker.account().account_id)
    assert reconcile(ledger.net_positions(acct), {p.symbol: p.qty for p in broker.positions()}) == []
