"""The safety net through a real `dagster-daemon`: an alert stored while no worker is up
is picked up by the sensor, run once (run key = its partition), its order placed once,
and the alert acked; the next sensor ticks start nothing more."""

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.queue import SqliteAlertQueue
from trading_assets.adapters.tradingview.alerts import alert_content_id
from trading_assets.defs.trend_dmi.alerts import alert_partition_key
from trading_assets.gateway.envelope import encode
from trading_assets_tests.e2e.cli_world import stop_group

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.daemon


def test_the_sensor_runs_an_alert_no_worker_took_exactly_once(tmp_path, monkeypatch):
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
    key = alert_partition_key(body)

    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local"}
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline, run = time.monotonic() + 150, None
            while time.monotonic() < deadline:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={"trend_dmi/alert": key}))
                if runs and runs[0].is_finished and queue.depth() == 0:
                    run = runs[0]
                    break
                time.sleep(1)
            assert run is not None, f"no finished run for {key} (queue depth {queue.depth()})"
            assert run.status == dg.DagsterRunStatus.SUCCESS and run.tags["trend_dmi/launched_by"] == "sensor"
            time.sleep(12)  # two more sensor ticks: nothing new to start
            assert len(instance.get_runs(filters=dg.RunsFilter(tags={"trend_dmi/alert": key}))) == 1
    finally:
        stop_group(daemon)
    [order] = PaperBroker(data / "paper_trend_dmi.sqlite").orders()
    assert (order.symbol[:3], order.side.value, order.qty) == ("MNQ", "buy", 1.0)
