"""The two launch paths for stored alerts: the warm worker (receive, run in process, ack)
and the sensor safety net (one run request per unprocessed alert, run key = partition);
claimed by the queue, so the two never both act on an alert; a failed run's alert comes
back; a burst over several symbols is processed once each, in order per symbol."""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.tradingview.alerts import alert_content_id
from trading_assets.defs.resources import local_resources
from trading_assets.defs.trend_dmi.alerts import FLOW, alert_partition_key, alert_payload, alert_run_config
from trading_assets.defs.trend_dmi.assets import FLOW_ASSETS, trend_dmi_alert_job
from trading_assets.defs.trend_dmi.processing import ALERT_TAG, AlertWorker, sensor_requests
from trading_assets.defs.trend_dmi.settings import TrendDmiSettings
from trading_assets.resources.brokers import PaperBrokerResource
from trading_assets_tests.defs.test_trend_dmi_flow import alert_body


def put(queue, body: str) -> str:
    payload = alert_payload(body)
    alert_id = alert_content_id(payload)
    assert queue.put(alert_id, body, payload["market_data"]["symbol"])
    return alert_id


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr("trading_assets.core.instruments.front_month", lambda root, on: f"{root}Z6")
    tickers = {f"T{i}1!": f"T{i}Z6" for i in range(5)} | {"MNQ1!": "MNQ@front"}
    # five futures at ~24,500 each: more than the default 100,000 of paper cash
    broker = PaperBrokerResource(state_path=str(tmp_path / "paper_trend_dmi.sqlite"), starting_cash=1_000_000.0,
                                 allow_short=True)
    resources = local_resources(tmp_path, trend_dmi=TrendDmiSettings(instruments=tickers), trend_dmi_broker=broker)
    job = dg.Definitions(assets=FLOW_ASSETS, jobs=[trend_dmi_alert_job],
                         resources=resources).resolve_job_def("trend_dmi_alert_job")
    with dg.instance_for_test() as instance:
        yield resources, job, instance


def test_the_worker_runs_each_alert_once_and_acks_it(world):
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    put(queue, alert_body("long_entry", seconds_ago=30))
    worker = AlertWorker(queue, job, instance)
    [done] = worker.run_once(wait_seconds=0)
    assert done.success and queue.depth() == 0
    [run] = instance.get_runs(filters=dg.RunsFilter(tags={ALERT_TAG: done.partition_key}))
    assert run.tags["trend_dmi/launched_by"] == "worker" and run.tags["ticker"] == "MNQ1!"
    assert worker.run_once(wait_seconds=0) == []
    assert len(resources["trend_dmi_broker"].get().orders()) == 1


def test_an_alert_whose_run_exists_is_acked_without_a_second_run(world):
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    body = alert_body("long_entry")
    put(queue, body)
    AlertWorker(queue, job, instance).run_once(wait_seconds=0)
    # the sender re-delivers after the first was acked: the queue says duplicate; and a
    # copy that reached the queue anyway (a crash between run and ack) is acked, not rerun
    assert not queue.put(alert_content_id(alert_payload(body)), body, "MNQ1!")
    assert len(instance.get_run_ids(filters=dg.RunsFilter(tags={ALERT_TAG: alert_partition_key(body)}))) == 1


def test_a_failed_run_puts_its_alert_back_and_the_retry_trades_it(world, monkeypatch):
    """A failed run is not "done": the released alert is run again (a second attempt),
    not acked as if its run existed, and it trades once."""
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    body = alert_body("long_entry")
    put(queue, body)
    worker = AlertWorker(queue, job, instance, retry_delay_seconds=0)
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    [failed] = worker.run_once(wait_seconds=0)
    assert not failed.success and queue.depth() == 1  # released, not lost
    monkeypatch.setenv("TRADING_KILL_SWITCH", "0")
    [retried] = worker.run_once(wait_seconds=1)
    assert retried.success and retried.note == "" and queue.depth() == 0
    runs = instance.get_runs(filters=dg.RunsFilter(tags={ALERT_TAG: alert_partition_key(body)}))
    assert sorted(r.tags["dagster/run_key"][-2:] for r in runs) == [":0", ":1"]
    assert len(resources["trend_dmi_broker"].get().orders()) == 1


def test_an_alert_whose_worker_died_mid_run_is_run_again_once(world):
    """The worker was killed during the alert's run (its run left STARTED, its process gone):
    the next worker marks that run failed and runs the alert again; one order."""
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    body = alert_body("long_entry")
    put(queue, body)
    key = alert_partition_key(body)
    instance.add_dynamic_partitions("trend_dmi_alerts", [key])
    dead = {"pid": 2**22 + 12345, "host": __import__("socket").gethostname(), "started_at": 1.0}
    instance.create_run_for_job(job_def=job, run_id=None, run_config=alert_run_config(body),
                                tags={ALERT_TAG: key, "dagster/partition": key,
                                      "trading_assets/owner": json.dumps(dead)}, status=dg.DagsterRunStatus.STARTED)
    [msg] = queue.receive(max_messages=1)
    queue.release(msg)  # the dead worker's claim ran out
    [done] = AlertWorker(queue, job, instance).run_once(wait_seconds=1)
    assert done.success and queue.depth() == 0
    assert len(resources["trend_dmi_broker"].get().orders()) == 1


def test_the_sensor_requests_one_run_per_alert_past_the_workers_grace(world):
    resources, _job, instance = world
    queue = resources["alert_queue"].get()
    first, second = alert_body("long_entry"), alert_body("short_entry", ticker="T01!")
    put(queue, first)
    put(queue, second)
    requests, keys = sensor_requests(queue, instance, now=datetime.now(UTC) + timedelta(seconds=11))
    assert sorted(r.partition_key for r in requests) == sorted(keys) == sorted(
        [alert_partition_key(first), alert_partition_key(second)])
    assert all(r.tags["trend_dmi/launched_by"] == "sensor" and r.run_key == f"{r.partition_key}:0" for r in requests)
    assert queue.depth() == 2  # kept (hidden) until their runs exist, then acked


def test_the_sensor_leaves_young_alerts_to_the_worker(world):
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    put(queue, alert_body("long_entry"))
    requests, _ = sensor_requests(queue, instance)
    assert requests == [] and queue.depth() == 1
    [done] = AlertWorker(queue, job, instance).run_once(wait_seconds=0)  # still there for the worker
    assert done.success


def test_a_burst_over_five_symbols_is_processed_once_each_in_order_per_symbol(world):
    resources, job, instance = world
    queue = resources["alert_queue"].get()
    order = ["long_entry", "di_minus_over_plus", "di_plus_over_minus", "short_entry"]
    for step, name in enumerate(order):  # 20 alerts: 4 per symbol, interleaved across symbols
        for i in range(5):
            put(queue, alert_body(name, seconds_ago=100 - 10 * step, ticker=f"T{i}1!"))
    worker = AlertWorker(queue, job, instance)
    done = []
    while batch := worker.run_once(wait_seconds=0):
        done.extend(batch)
    assert len(done) == 20 and all(d.success for d in done) and queue.depth() == 0
    ledger = resources["ledger"].get()
    for i in range(5):
        legs = [(x.leg, x.status.value) for x in ledger.intents(FLOW) if x.symbol == f"T{i}Z6"]
        assert legs == [("open_long", "filled"), ("close_long", "filled"), ("open_long", "filled"),
                        ("close_long", "filled"), ("open_short", "filled")], i
    positions = {p.symbol: p.qty for p in resources["trend_dmi_broker"].get().positions()}
    assert positions == {f"T{i}Z6": -1.0 for i in range(5)}
    store = resources["symbol_state"].get()
    assert all(json.loads(json.dumps(store.load(FLOW, f"T{i}1!").state))["position"] == "SHORT" for i in range(5))


def test_the_ticker_map_comes_from_one_setting_and_a_bad_one_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TRADING_TREND_DMI_INSTRUMENTS", " MNQ1!=MNQ@front, ES1!=ES@front ,AAPL=AAPL")
    assert local_resources(tmp_path)["trend_dmi"].instruments == {"MNQ1!": "MNQ@front", "ES1!": "ES@front",
                                                                  "AAPL": "AAPL"}
    monkeypatch.delenv("TRADING_TREND_DMI_INSTRUMENTS")
    assert local_resources(tmp_path)["trend_dmi"].instruments == {"MNQ1!": "MNQ@front"}  # the default
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    done = subprocess.run([sys.executable, "-m", "trading_assets", "worker", "--once"], cwd=root,
                          env={**env, "TRADING_TREND_DMI_INSTRUMENTS": "MNQ1!", "TRADING_DATA_DIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TRADING_TREND_DMI_INSTRUMENTS: 'MNQ1!' is not TICKER=INSTRUMENT" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_remembers_found_partitions_and_asks_again_for_missing_ones():
    from trading_assets.defs.trend_dmi.alerts import alert_partitions
    from trading_assets.defs.trend_dmi.processing import remember_partitions

    with dg.instance_for_test() as instance:
        remember_partitions(instance)
        asked = []
        storage_has = instance.event_log_storage.has_dynamic_partition
        instance.event_log_storage.has_dynamic_partition = lambda n, k: asked.append(k) or storage_has(n, k)
        name = alert_partitions.name
        assert not instance.has_dynamic_partition(name, "a") and not instance.has_dynamic_partition(name, "a")
        assert asked == ["a", "a"]  # missing: asked each time
        instance.add_dynamic_partitions(name, ["a"])
        assert all(instance.has_dynamic_partition(name, "a") for _ in range(5))
        assert asked == ["a", "a", "a"]  # found once, then remembered


def test_each_worker_creates_the_broker_pool_once_at_its_default_limit():
    from trading_assets.defs.conventions import BROKER_POOL
    from trading_assets.defs.trend_dmi.processing import ensure_pool

    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        assert BROKER_POOL not in instance.event_log_storage.get_concurrency_keys()
        ensure_pool(instance, BROKER_POOL)
        ensure_pool(instance, BROKER_POOL)  # a second worker starting: nothing to do, no error
        info = instance.event_log_storage.get_concurrency_info(BROKER_POOL)
        assert info.slot_count == 1


def test_the_workers_instance_is_dagster_homes_without_stdout_capture(tmp_path, monkeypatch):
    from trading_assets.defs.trend_dmi.processing import worker_instance

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("TRADING_WORKER_CAPTURE_LOGS", raising=False)
    with worker_instance() as instance:
        assert type(instance.compute_log_manager).__name__ == "NoOpComputeLogManager"
        assert instance.root_directory == str(tmp_path)  # the same runs, events and pools as the UI's
        assert instance.global_op_concurrency_default_limit == 1
    monkeypatch.setenv("TRADING_WORKER_CAPTURE_LOGS", "1")
    with worker_instance() as instance:
        assert type(instance.compute_log_manager).__name__ == "LocalComputeLogManager"
