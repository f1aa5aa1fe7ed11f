"""The alert queue's contract (`core.messaging`), one suite for the local SQLite queue and
for SQS FIFO + DynamoDB on a real moto server: what the webhook gateway ("accepted" /
"duplicate"), the alert worker and the sensor rely on.

Visibility timeouts are 1 s where a case waits for one, so the suite stays quick. Other
consumers are other processes where it matters (a consumer that dies, consumers racing).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from trading_assets.adapters.aws.clients import AwsSetupError, client
from trading_assets.adapters.aws.schema import table_specs
from trading_assets.adapters.aws.sqs_queue import SqsAlertQueue, ensure_queue
from trading_assets.adapters.sqlite.queue import SqliteAlertQueue
from trading_assets.core.messaging import AlertQueue, QueuedAlert

REPO = Path(__file__).resolve().parents[2]
VT = 1  # seconds: the visibility timeout of cases that wait for a redelivery
_names = itertools.count()


@dataclass
class World:
    """Makes queues of one kind; `reopen` gives another handle on the same queue (another
    process would build exactly that), `spec` what a subprocess needs to build one."""

    kind: str
    make: Callable[[float, int], AlertQueue]
    reopen: Callable[[AlertQueue], AlertQueue]
    spec: Callable[[AlertQueue], dict[str, Any]]

    def queue(self, visibility_timeout: float = 30, max_receives: int = 5) -> AlertQueue:
        return self.make(visibility_timeout, max_receives)


def _sqlite_world(tmp_path: Path) -> World:
    def make(vt: float, max_receives: int) -> AlertQueue:
        return SqliteAlertQueue(tmp_path / f"alerts-{next(_names)}.sqlite", vt, max_receives)

    def reopen(q: Any) -> AlertQueue:
        return SqliteAlertQueue(q.path, q.visibility_timeout_seconds, q.max_receives)

    def spec(q: Any) -> dict[str, Any]:
        return {"kind": "sqlite", "path": str(q.path), "vt": q.visibility_timeout_seconds, "max": q.max_receives}

    return World("sqlite", make, reopen, spec)


def _sqs_world(aws: Any) -> World:
    ddb = client("dynamodb", aws.region)
    ddb.create_table(**table_specs(aws.transactions_table, aws.equity_table, aws.orders_table)[aws.orders_table])

    def make(vt: float, max_receives: int) -> AlertQueue:
        n = next(_names)
        ensure_queue(aws.region, f"alerts-{n}.fifo", f"alerts-{n}-dlq.fifo", max_receives, int(vt))
        return SqsAlertQueue(aws.region, f"alerts-{n}.fifo", aws.orders_table)

    def reopen(q: Any) -> AlertQueue:
        return SqsAlertQueue(q.region, q.queue_name, q.dedupe_table)

    def spec(q: Any) -> dict[str, Any]:
        return {"kind": "sqs", "region": q.region, "queue": q.queue_name, "table": q.dedupe_table}

    return World("sqs", make, reopen, spec)


@pytest.fixture(params=["sqlite", "sqs"])
def world(request, tmp_path) -> World:
    if request.param == "sqlite":
        return _sqlite_world(tmp_path)
    return _sqs_world(request.getfixturevalue("aws_env"))


def drain(q: AlertQueue, ack: bool = True) -> list[QueuedAlert]:
    """Everything deliverable now, one at a time (acked unless `ack=False`)."""
    got: list[QueuedAlert] = []
    while batch := q.receive(1):
        got.extend(batch)
        if ack:
            q.ack(batch[0])
    return got


# A consumer in another process: builds the queue from its spec, receives, prints what it
# got as JSON lines. mode "hold": receive one and wait to be killed (a consumer that dies
# without acking); mode "drain": receive and ack until the queue stays empty.
CONSUMER = r"""
import json, sys, time
spec, mode = json.loads(sys.argv[1]), sys.argv[2]
if spec["kind"] == "sqlite":
    from trading_assets.adapters.sqlite.queue import SqliteAlertQueue
    q = SqliteAlertQueue(spec["path"], spec["vt"], spec["max"])
else:
    from trading_assets.adapters.aws.sqs_queue import SqsAlertQueue
    q = SqsAlertQueue(spec["region"], spec["queue"], spec["table"])
print(json.dumps({"ready": True}), flush=True)
if mode == "hold":
    for m in q.receive(1, wait_seconds=5):
        print(json.dumps({"id": m.alert_id, "count": m.receive_count}), flush=True)
    time.sleep(60)
else:
    idle = 0
    while idle < 3:
        batch = q.receive(3)
        idle = 0 if batch else idle + 1
        for m in batch:
            print(json.dumps({"id": m.alert_id, "group": m.group}), flush=True)
            time.sleep(0.005)
            q.ack(m)
        time.sleep(0.02)
"""


def consumer(world: World, q: AlertQueue, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", CONSUMER, json.dumps(world.spec(q)), mode], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    assert json.loads(proc.stdout.readline()) == {"ready": True}
    return proc


# ----------------------------------------------------------------------------- dedupe


def test_put_stores_once_per_alert_id(world):
    q = world.queue()
    assert q.put("tv-1", '{"n": 1}', "NQ1!") is True
    assert q.put("tv-1", '{"n": 1}', "NQ1!") is False
    assert q.put("tv-1", '{"n": "other body, same id"}', "ES1!") is False
    assert world.reopen(q).put("tv-1", "{}", "NQ1!") is False  # another process knows it too
    got = drain(q)
    assert [(m.alert_id, m.body, m.group) for m in got] == [("tv-1", '{"n": 1}', "NQ1!")]


def test_duplicate_is_answered_after_the_alert_was_processed(world):
    """The gateway answers "duplicate" to a re-delivery that comes after the worker acked
    the alert: SQS forgets a deduplication id after 5 minutes (moto already at the
    delete), so only the durable record can answer."""
    q = world.queue()
    assert q.put("tv-2", "{}", "NQ1!")
    [m] = q.receive(1)
    q.ack(m)
    assert q.put("tv-2", "{}", "NQ1!") is False
    assert q.receive(10) == []
    assert q.depth() == 0


def test_duplicate_beyond_the_sqs_dedupe_window_is_not_queued(world, monkeypatch):
    """SQS FIFO drops a repeated deduplication id only within 5 minutes: with the window
    closed (moto's constant set to 0) a re-delivery must still neither queue a second
    message nor be answered "accepted"."""
    import moto.sqs.models

    monkeypatch.setattr(moto.sqs.models, "DEDUPLICATION_TIME_IN_SECONDS", 0)
    q = world.queue()
    assert q.put("tv-3", "{}", "NQ1!") is True
    time.sleep(0.01)
    assert q.put("tv-3", "{}", "NQ1!") is False
    assert [m.alert_id for m in drain(q)] == ["tv-3"]


def test_concurrent_puts_of_one_alert_store_it_once(world):
    """A TradingView retry racing the first delivery: exactly one "accepted"."""
    from concurrent.futures import ThreadPoolExecutor

    q = world.queue()
    handles = [world.reopen(q) for _ in range(4)]
    with ThreadPoolExecutor(len(handles)) as pool:
        answers = list(pool.map(lambda h: h.put("tv-race", "{}", "NQ1!"), handles))
    assert sorted(answers) == [False] * 3 + [True]
    assert [m.alert_id for m in drain(q)] == ["tv-race"]


def test_bad_arguments_are_refused(world):
    q = world.queue()
    with pytest.raises(ValueError, match="alert_id"):
        q.put(" ", "{}", "NQ1!")
    with pytest.raises(ValueError, match="group"):
        q.put("tv-4", "{}", "")
    with pytest.raises(ValueError, match="max_messages"):
        q.receive(11)
    with pytest.raises(ValueError, match="wait_seconds"):
        q.receive(1, wait_seconds=21)
    q.put("tv-5", "{}", "NQ1!")
    [m] = q.receive(1)
    with pytest.raises(ValueError, match="delay_seconds"):
        q.release(m, delay_seconds=13 * 3600)  # SQS's limit is 12 h (and SQS would say so only as a bad receipt)


# ----------------------------------------------------------------------------- order


def test_each_group_comes_out_in_put_order(world):
    q = world.queue()
    puts = [("NQ1!", "n1"), ("ES1!", "e1"), ("NQ1!", "n2"), ("NQ1!", "n3"), ("ES1!", "e2")]
    for group, alert_id in puts:
        assert q.put(alert_id, alert_id, group)
    by_group: dict[str, list[str]] = defaultdict(list)
    for m in drain(q):
        by_group[m.group].append(m.alert_id)
    assert by_group == {"NQ1!": ["n1", "n2", "n3"], "ES1!": ["e1", "e2"]}


def test_a_group_is_blocked_while_one_of_its_alerts_is_in_flight(world):
    q = world.queue()
    for group, alert_id in [("NQ1!", "n1"), ("NQ1!", "n2"), ("ES1!", "e1"), ("ES1!", "e2")]:
        q.put(alert_id, alert_id, group)
    [first] = q.receive(1)
    assert first.alert_id in ("n1", "e1")  # a group's head
    others = q.receive(10)
    assert others and all(m.group != first.group for m in others)  # other groups are not held up
    assert world.reopen(q).receive(10) == []  # nor does another consumer get first's group
    q.ack(first)
    follower = {"n1": "n2", "e1": "e2"}[first.alert_id]
    assert [m.alert_id for m in q.receive(10)] == [follower]


def test_a_released_alert_stays_the_head_of_its_group(world):
    q = world.queue()
    q.put("n1", "n1", "NQ1!")
    q.put("n2", "n2", "NQ1!")
    [m] = q.receive(1)
    assert (m.alert_id, m.receive_count) == ("n1", 1)
    q.release(m)
    [again] = q.receive(1)
    assert (again.alert_id, again.receive_count) == ("n1", 2)
    q.release(again, delay_seconds=VT)  # a delayed release keeps the group blocked
    assert q.receive(10) == []


# ----------------------------------------------------------------------------- delivery


def test_unacked_alert_is_redelivered_after_the_visibility_timeout_and_acked_one_is_not(world):
    q = world.queue(visibility_timeout=VT)
    q.put("n1", "n1", "NQ1!")
    q.put("e1", "e1", "ES1!")
    got = {m.alert_id: m for m in q.receive(10)}
    assert set(got) == {"n1", "e1"}
    assert all(m.receive_count == 1 for m in got.values())
    q.ack(got["e1"])
    assert q.receive(10) == []  # n1 is in flight
    time.sleep(VT + 0.3)
    [back] = q.receive(10, wait_seconds=1)
    assert (back.alert_id, back.receive_count) == ("n1", 2)
    assert back.receipt != got["n1"].receipt
    q.ack(back)
    assert q.depth() == 0


def test_alert_held_by_a_consumer_that_dies_goes_to_another_consumer(world):
    q = world.queue(visibility_timeout=VT)
    q.put("n1", '{"alert": 1}', "NQ1!")
    proc = consumer(world, q, "hold")
    try:
        assert json.loads(proc.stdout.readline()) == {"id": "n1", "count": 1}
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    assert q.receive(1) == []  # still hidden: the dead consumer's claim has not timed out
    [m] = q.receive(1, wait_seconds=VT + 2)
    assert (m.alert_id, m.body, m.receive_count) == ("n1", '{"alert": 1}', 2)


def test_poison_alert_moves_to_dead_letters_after_max_receives_and_unblocks_its_group(world):
    q = world.queue(max_receives=2)
    q.put("n1", "poison", "NQ1!")
    q.put("n2", "fine", "NQ1!")
    for count in (1, 2):
        [m] = q.receive(1)
        assert (m.alert_id, m.receive_count) == ("n1", count)
        q.release(m)
    [m] = q.receive(1)  # the third receive moves n1 to the dead letters instead
    assert m.alert_id == "n2"
    q.ack(m)
    dead = q.dead_letters()
    assert [(d.alert_id, d.body, d.group) for d in dead] == [("n1", "poison", "NQ1!")]
    assert dead[0].receive_count >= 2
    assert [d.alert_id for d in q.dead_letters()] == ["n1"]  # a look, not a consume
    assert q.receive(10) == []
    assert q.depth() == 0
    assert q.put("n1", "poison", "NQ1!") is False  # a dead alert is still a known alert


def test_consumers_in_several_processes_never_get_the_same_alert(world):
    q = world.queue()
    alerts = {f"a{i}": f"G{i % 6}" for i in range(24)}
    for alert_id, group in alerts.items():
        q.put(alert_id, alert_id, group)
    procs = [consumer(world, q, "drain") for _ in range(3)]
    seen: list[dict[str, str]] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        seen.extend(json.loads(line) for line in out.splitlines())
    ids = [s["id"] for s in seen]
    assert sorted(ids) == sorted(alerts)  # each alert exactly once: none twice, none lost
    assert {s["id"]: s["group"] for s in seen} == alerts
    assert q.depth() == 0


def test_the_resource_builds_this_queue(world):
    from trading_assets.resources.messaging import SqliteAlertQueueResource, SqsAlertQueueResource

    q = world.queue()
    spec = world.spec(q)
    if world.kind == "sqlite":
        resource = SqliteAlertQueueResource(path=spec["path"], visibility_timeout_seconds=spec["vt"],
                                            max_receives=spec["max"])
    else:
        resource = SqsAlertQueueResource(region=spec["region"], queue_name=spec["queue"], dedupe_table=spec["table"])
    built = resource.get()
    assert isinstance(built, AlertQueue)
    assert built.put("tv-r", "{}", "NQ1!") is True
    assert [m.alert_id for m in drain(q)] == ["tv-r"]  # the same queue as the adapter built directly


# ----------------------------------------------------------------------------- SQS only


@pytest.fixture
def sqs_world(aws_env) -> World:
    return _sqs_world(aws_env)


def test_sqs_crash_between_send_and_record_loses_nothing_and_doubles_nothing(sqs_world):
    """The process dies after SendMessage, before the dedupe record: the gateway answers
    5xx, TradingView re-delivers; that re-delivery is accepted and there is one message."""
    q = sqs_world.queue()

    def crash(*_a, **_k):
        raise ConnectionError("process died between send and record")

    q._record = crash  # type: ignore[attr-defined]
    with pytest.raises(ConnectionError):
        q.put("tv-crash", "{}", "NQ1!")
    retry = sqs_world.reopen(q)  # the gateway after its restart
    assert retry.put("tv-crash", "{}", "NQ1!") is True
    assert retry.put("tv-crash", "{}", "NQ1!") is False
    assert [m.alert_id for m in drain(retry)] == ["tv-crash"]


def test_sqs_ids_sqs_would_refuse_are_carried_intact(sqs_world):
    q = sqs_world.queue()
    alert_id, group = "alert with spaces é " + "x" * 200, "MNQ 03-27 é"
    assert q.put(alert_id, "{}", group)
    assert q.put(alert_id, "{}", group) is False
    [m] = q.receive(1)
    assert (m.alert_id, m.group) == (alert_id, group)


def test_sqs_missing_queue_or_table_is_a_clear_setup_error(aws_env):
    q = SqsAlertQueue(aws_env.region, "nope.fifo", aws_env.orders_table)
    with pytest.raises(AwsSetupError, match=r"SQS queue nope\.fifo .*does not exist.*aws-bootstrap"):
        q.receive(1)
    ensure_queue(aws_env.region, "here.fifo", "here-dlq.fifo")
    q = SqsAlertQueue(aws_env.region, "here.fifo", aws_env.orders_table)
    with pytest.raises(AwsSetupError, match=rf"DynamoDB table {aws_env.orders_table} .*does not exist.*aws-bootstrap"):
        q.put("tv-1", "{}", "NQ1!")
    with pytest.raises(ValueError, match=r"\.fifo"):
        SqsAlertQueue(aws_env.region, "standard-queue", aws_env.orders_table)


def test_ensure_queue_is_idempotent_and_brings_the_redrive_policy_up_to_date(aws_env):
    url = ensure_queue(aws_env.region, "boot.fifo", "boot-dlq.fifo", max_receives=5, visibility_timeout=30)
    again = ensure_queue(aws_env.region, "boot.fifo", "boot-dlq.fifo", max_receives=3, visibility_timeout=10)
    assert again == url
    sqs = client("sqs", aws_env.region)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_url = sqs.get_queue_url(QueueName="boot-dlq.fifo")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert attrs["FifoQueue"] == "true"
    assert attrs["VisibilityTimeout"] == "10"
    assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3}
    assert len([u for u in sqs.list_queues().get("QueueUrls", []) if "boot" in u]) == 2
