"""Notifiers: SNS (through a real subscription on moto: what a subscriber actually gets)
and the log notifier (the local world's)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from trading_assets.adapters.aws.clients import AwsSetupError, client
from trading_assets.adapters.aws.sns_notifier import SnsNotifier, ensure_topic, sns_subject
from trading_assets.adapters.log_notifier import LogNotifier
from trading_assets.core.messaging import Notification, NotificationKind, Notifier
from trading_assets.resources.messaging import LogNotifierResource, SnsNotifierResource

AT = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)


def drift() -> Notification:
    return Notification(kind="drift", subject="Drift on TQQQ: ledger 173, broker 170",
                        message="The ledger and the broker disagree; the tick did not trade.",
                        details={"symbol": "TQQQ", "ledger_qty": 173, "broker_qty": 170},
                        flow="ema_concentration", at=AT)


def subscribed_queue(region: str, topic_arn: str, filter_kinds: list[str] | None = None) -> str:
    """An SQS queue subscribed to the topic (optionally filtered on `kind`); its URL."""
    sqs, sns = client("sqs", region), client("sns", region)
    name = f"sub-{len(filter_kinds or [])}-{abs(hash(tuple(filter_kinds or [])))}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"FilterPolicy": json.dumps({"kind": filter_kinds})} if filter_kinds else {}
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
    return url


def envelopes(region: str, url: str) -> list[dict]:
    sqs = client("sqs", region)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


# ----------------------------------------------------------------------------- SNS


def test_sns_subscriber_gets_subject_json_message_and_kind_attribute(aws_env):
    arn = ensure_topic(aws_env.region, "trading-events")
    url = subscribed_queue(aws_env.region, arn)
    notifier = SnsNotifier(aws_env.region, arn)
    assert isinstance(notifier, Notifier)
    notifier.notify(drift())
    [env] = envelopes(aws_env.region, url)
    assert env["Type"] == "Notification" and env["TopicArn"] == arn
    assert env["Subject"] == "Drift on TQQQ: ledger 173, broker 170"
    assert json.loads(env["Message"]) == {
        "kind": "drift", "subject": "Drift on TQQQ: ledger 173, broker 170",
        "message": "The ledger and the broker disagree; the tick did not trade.",
        "details": {"symbol": "TQQQ", "ledger_qty": 173, "broker_qty": 170},
        "flow": "ema_concentration", "time": "2026-03-02T15:30:00+00:00",
    }
    assert env["MessageAttributes"]["kind"] == {"Type": "String", "Value": "drift"}
    assert env["MessageAttributes"]["flow"] == {"Type": "String", "Value": "ema_concentration"}


def test_sns_subscription_can_filter_on_kind(aws_env):
    arn = ensure_topic(aws_env.region, "trading-events")
    pager = subscribed_queue(aws_env.region, arn, filter_kinds=["run_failure", "kill_switch"])
    notifier = SnsNotifier(aws_env.region, arn)
    notifier.notify(drift())
    notifier.notify(Notification(kind=NotificationKind.KILL_SWITCH, subject="Kill switch engaged",
                                 message="TRADING_KILL_SWITCH=1: no orders are placed", at=AT))
    assert [json.loads(e["Message"])["kind"] for e in envelopes(aws_env.region, pager)] == ["kill_switch"]


def test_sns_subject_is_made_acceptable_and_the_full_subject_stays_in_the_message(aws_env):
    arn = ensure_topic(aws_env.region, "trading-events")
    url = subscribed_queue(aws_env.region, arn)
    subject = "Order rejected:\nMNQ short — café “insufficient margin” 🚫 " + "x" * 120
    SnsNotifier(aws_env.region, arn).notify(Notification(kind="order_rejected", subject=subject, message="m", at=AT))
    [env] = envelopes(aws_env.region, url)
    sent = env["Subject"]
    assert len(sent) <= 100 and sent.endswith("...")
    assert all(" " <= c <= "~" for c in sent), sent
    assert sent.startswith("Order rejected: MNQ short ? cafe ?insufficient margin? ? xxx")
    assert json.loads(env["Message"])["subject"] == subject


@pytest.mark.parametrize(("raw", "expected"), [
    ("plain subject", "plain subject"),
    ("two\r\nlines\tand  spaces ", "two lines and spaces"),
    ("Zürich € ✓", "Zurich ? ?"),
    ("a" * 100, "a" * 100),
    ("a" * 101, "a" * 97 + "..."),
    ("\n\x00 ", "run_failure"),  # nothing left: the fallback
])
def test_sns_subject_rules(raw, expected):
    assert sns_subject(raw, "run_failure") == expected


def test_sns_missing_topic_is_a_clear_setup_error(aws_env):
    missing = f"arn:aws:sns:{aws_env.region}:123456789012:no-such-topic"
    with pytest.raises(AwsSetupError, match=r"SNS topic arn:aws:sns:.*:no-such-topic does not exist.*aws-bootstrap"):
        SnsNotifier(aws_env.region, missing).notify(drift())
    with pytest.raises(AwsSetupError, match="TRADING_SNS_TOPIC_ARN"):
        SnsNotifier(aws_env.region, None)


def test_ensure_topic_is_idempotent(aws_env):
    arn = ensure_topic(aws_env.region, "trading-events")
    assert ensure_topic(aws_env.region, "trading-events") == arn
    assert arn.endswith(":trading-events")
    assert len(client("sns", aws_env.region).list_topics()["Topics"]) == 1


def test_sns_notifier_resource_publishes(aws_env):
    arn = ensure_topic(aws_env.region, "trading-events")
    url = subscribed_queue(aws_env.region, arn)
    SnsNotifierResource(region=aws_env.region, topic_arn=arn).get().notify(drift())
    assert [e["Subject"] for e in envelopes(aws_env.region, url)] == ["Drift on TQQQ: ledger 173, broker 170"]


# ----------------------------------------------------------------------------- log


def test_log_notifier_logs_problems_as_warnings_and_keeps_the_last_few(caplog):
    notifier = LogNotifier("trading_assets.notifications.test", keep=2)
    assert isinstance(notifier, Notifier)
    caplog.set_level(logging.INFO, logger="trading_assets.notifications.test")
    notifier.notify(drift())
    notifier.notify(Notification(kind="info", subject="Tick done", message="nothing to do", at=AT))
    notifier.notify(Notification(kind="run_failure", subject="Run failed", message="boom", at=AT))
    levels = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == logging.WARNING
    assert "drift [ema_concentration]: Drift on TQQQ" in levels[0][1] and '"broker_qty": 170' in levels[0][1]
    assert levels[1] == (logging.INFO, "info: Tick done: nothing to do")
    assert levels[2] == (logging.WARNING, "run_failure: Run failed: boom")
    assert [n.subject for n in notifier.sent] == ["Tick done", "Run failed"]


def test_log_notifier_resource_builds_a_notifier():
    assert isinstance(LogNotifierResource().get(), LogNotifier)


def test_notification_refuses_an_unknown_kind_and_a_naive_time():
    with pytest.raises(ValueError, match="weather"):
        Notification(kind="weather", subject="s", message="m")
    with pytest.raises(ValueError, match="timezone"):
        Notification(kind="drift", subject="s", message="m", at=datetime(2026, 1, 1))
    details = {"a": 1}
    n = Notification(kind="drift", subject="s", message="m", details=details)
    details["a"] = 2
    assert n.details == {"a": 1}  # a frozen copy: a later change by the caller is not sent
