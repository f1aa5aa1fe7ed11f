"""What the flows tell people (the log locally, SNS in aws mode): a rejected order, the
kill switch, position drift, and any failed run (through the run-failure sensor)."""

import logging

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.core.messaging import Notification, NotificationKind
from trading_assets.core.ports import OrderRejected, OrderRequest, Side
from trading_assets.defs.ema_concentration.assets import FLOW_ASSETS
from trading_assets.defs.notifications import notify_on_run_failure, tell
from trading_assets.resources.base import BrokerResource
from trading_assets.resources.messaging import LogNotifierResource, NotifierResource
from trading_assets_tests.defs.test_ema_flow import BULLISH, EXIT

REASON = "insufficient buying power for TQQQ"


class RejectingPaper(PaperBroker):
    def submit_order(self, request: OrderRequest):
        raise OrderRejected(f"rejected: {REASON}", broker=self.name, reason=REASON)


class RejectingBrokerResource(BrokerResource):
    state_path: str

    def get(self):
        return RejectingPaper(self.state_path, 100_000.0)


@pytest.fixture
def told(caplog):
    caplog.set_level(logging.WARNING, logger="trading_assets.notifications")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "trading_assets.notifications"]


def test_a_rejected_order_is_told_with_the_brokers_reason(harness, told):
    result = harness.run(BULLISH, ema_concentration_broker=RejectingBrokerResource(
        state_path=str(harness.base / "rejecting.sqlite")))
    assert result.success  # a rejection is an outcome of the tick, not a failed run
    [message] = [m for m in told() if m.startswith("order_rejected")]
    assert "[ema_concentration]" in message and "buy" in message and "TQQQ rejected" in message
    assert REASON in message


def test_the_kill_switch_is_told(harness, told, monkeypatch):
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    assert not harness.run(BULLISH).success
    assert [m for m in told() if m.startswith("kill_switch [ema_concentration]")]


def test_drift_is_told_before_the_tick_stops(harness, told):
    assert harness.run(BULLISH).success
    harness.broker.submit_order(OrderRequest("by-hand", "SPY", Side.BUY, 1, reference_price=100.0))
    assert not harness.run(EXIT).success
    [message] = [m for m in told() if m.startswith("drift")]
    assert "SPY" in message


class BrokenNotifier(NotifierResource):
    error: str = "topic unreachable"

    def get(self):
        error = self.error

        class Broken:
            def notify(self, notification: Notification) -> None:
                raise ConnectionError(error)

        return Broken()


def test_a_notification_that_cannot_be_sent_never_masks_the_outcome(harness):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            FLOW_ASSETS, partition_key=BULLISH, instance=instance, raise_on_error=False,
            resources={**harness.resources, "notifier": BrokenNotifier(),
                       "ema_concentration_broker": RejectingBrokerResource(
                           state_path=str(harness.base / "rejecting.sqlite"))})
        assert result.success
        logged = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("could not send the order_rejected notification (ConnectionError: topic unreachable)" in m
               for m in logged)
    [intent] = harness.ledger.intents("ema_concentration", BULLISH)
    assert intent.status == "rejected" and intent.reason == REASON


@dg.asset
def always_fails() -> None:
    raise RuntimeError("bars vendor down")


def test_every_failed_run_is_told_by_the_sensor(told):
    job = dg.define_asset_job("failing_job", selection=[always_fails])
    defs = dg.Definitions(assets=[always_fails], jobs=[job])
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("failing_job").execute_in_process(instance=instance, raise_on_error=False)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="notify_on_run_failure", dagster_instance=instance, dagster_run=result.dagster_run,
            dagster_event=failure, resources={"notifier": LogNotifierResource()}).for_run_failure()
        notify_on_run_failure(context)
    [message] = [m for m in told() if m.startswith("run_failure")]
    assert "failing_job failed" in message and "bars vendor down" in message


def test_tell_says_whether_the_notification_went_out():
    context = dg.build_asset_context()
    assert tell(context, BrokenNotifier(), NotificationKind.INFO, "s", "m") is False
    assert tell(context, LogNotifierResource(), NotificationKind.INFO, "s", "m") is True
