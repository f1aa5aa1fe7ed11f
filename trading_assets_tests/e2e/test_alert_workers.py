"""`python -m trading_assets worker --processes 2` as real processes on one SQLite queue
and instance: three symbols' alerts run side by side, each symbol's in arrival order;
one worker killed -9 in the middle of a run is replaced by the supervisor, its alert is
run again, and every leg reaches the broker exactly once with the ledger reconciled."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import account_key, reconcile
from trading_assets.core.ports import OPEN_INTENT_STATUSES
from trading_assets.gateway.app import Gateway
from trading_assets.gateway.client import choose, stamp_now
from trading_assets.gateway.passphrase import PassphraseCache
from trading_assets.run_health import OWNER_TAG
from trading_assets.settings import LOCAL_TRADINGVIEW_PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]
TICKERS = {"AAA1!": "AAAZ6", "BBB1!": "BBBZ6", "CCC1!": "CCCZ6"}
pytestmark = pytest.mark.daemon


def _store_alerts(data: Path) -> dict[str, list[str]]:
    """The four sample alerts for each ticker, stored as the gateway stores them; the
    alert ids per ticker in arrival order."""
    from trading_assets.adapters.sqlite.queue import SqliteAlertQueue

    gateway = Gateway(SqliteAlertQueue(data / "alerts.sqlite"), PassphraseCache(lambda: LOCAL_TRADINGVIEW_PASSPHRASE))
    now = datetime.now(UTC)
    ids: dict[str, list[str]] = {t: [] for t in TICKERS}
    for step, (_, alert) in enumerate(stamp_now(choose(None), now=now)):
        for ticker in TICKERS:
            alert = json.loads(json.dumps(alert))
            alert["market_data"]["symbol"] = ticker
            body = json.dumps({"passphrase": LOCAL_TRADINGVIEW_PASSPHRASE, **alert}).encode()
            outcome = gateway.process(body, "application/json", "127.0.0.1")
            assert outcome.code == 200 and outcome.body["status"] == "accepted", (step, outcome.body)
            ids[ticker].append(outcome.alert_id)
    return ids


def _worker_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"trend_dmi/launched_by": "worker"})))


def test_two_worker_processes_trade_each_leg_once_in_order_per_symbol_through_a_kill_9(tmp_path, monkeypatch):
    home, data = tmp_path / "home", tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml reads it
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local",
           "TRADING_TREND_DMI_INSTRUMENTS": ",".join(f"{t}={i}" for t, i in TICKERS.items())}
    ids = _store_alerts(data)
    log = open(tmp_path / "workers.log", "w+")  # noqa: SIM115 - read back after the process ends
    workers = subprocess.Popen([sys.executable, "-m", "trading_assets", "worker", "--processes", "2"], cwd=ROOT,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    killed_run = None
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            deadline = time.monotonic() + 120
            while killed_run is None and time.monotonic() < deadline:  # kill a worker inside a run
                for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
                    pid = json.loads(run.tags[OWNER_TAG])["pid"]
                    os.kill(pid, signal.SIGKILL)
                    if instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED:
                        killed_run = run  # dead while its run was going: it cannot finish it
                    break
                time.sleep(0.02)
            assert killed_run is not None, "no worker run was seen going"

            every = [a for alerts in ids.values() for a in alerts]
            deadline = time.monotonic() + 150  # the killed alert is back after the queue's 30 s claim
            while time.monotonic() < deadline:
                done = {r.tags["alert_id"] for r in _worker_runs(instance) if r.status == dg.DagsterRunStatus.SUCCESS}
                if done >= set(every):
                    break
                time.sleep(0.5)
            runs = _worker_runs(instance)
            done = {r.tags["alert_id"] for r in runs if r.status == dg.DagsterRunStatus.SUCCESS}
            assert done == set(every), f"not processed: {set(every) - done}"
            killed = instance.get_run_by_id(killed_run.run_id)
            assert killed.status == dg.DagsterRunStatus.FAILURE  # found dead and marked by the next worker
            assert sum(r.tags["alert_id"] == killed.tags["alert_id"] for r in runs) == 2  # run once more
            assert len(runs) == len(every) + 1
    finally:
        workers.send_signal(signal.SIGTERM)
        code = workers.wait(timeout=60)
    log.seek(0)
    output = log.read()
    assert code == 0, output
    assert "ended (signal 9); starting another" in output, output

    broker = PaperBroker(data / "paper_trend_dmi.sqlite", allow_short=True)
    orders = broker.orders()
    for ticker, instrument in TICKERS.items():  # entry, exit, re-entry, flip (close, enter): in order
        assert [(o.side.value, o.status.value) for o in orders if o.symbol == instrument] == [
            ("buy", "filled"), ("sell", "filled"), ("buy", "filled"), ("sell", "filled"), ("sell", "filled")], ticker
    assert {p.symbol: p.qty for p in broker.positions()} == dict.fromkeys(TICKERS.values(), -1.0)
    assert len({o.client_order_id for o in orders}) == len(orders) == 15
    ledger = SqliteLedger(data / "ledger.sqlite")
    assert not [i for i in ledger.intents("trend_dmi") if i.status in OPEN_INTENT_STATUSES]
    acct = account_key(broker, broker.account().account_id)
    assert reconcile(ledger.net_positions(acct), {p.symbol: p.qty for p in broker.positions()}) == []
