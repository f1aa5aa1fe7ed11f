"""The alert queue on AWS: an SQS FIFO queue with a FIFO dead-letter queue, and a
DynamoDB record per alert id so "duplicate" is answered forever (see `core.messaging`).

Ordering and dedupe:
- `MessageGroupId` = the group (the symbol): SQS keeps each group in order and blocks
  it while one of its messages is in flight. `MessageDeduplicationId` = the alert id.
- SQS FIFO drops a repeated deduplication id only within 5 minutes, and `send_message`
  does not say whether it dropped one. So `put` keeps its own durable record in the
  `<prefix>-orders` table (`pk="alert#<alert_id>"`, `sk="alert"`, a conditional put):
    1. GetItem (consistent): recorded already -> False, nothing is sent;
    2. SendMessage;
    3. PutItem if `attribute_not_exists(pk)`: True, or False if a concurrent put of the
       same alert won (SQS dropped the second send: one message either way).
  Send comes before record so a crash between the two never loses an alert: the sender
  gets no answer and re-delivers, step 1 finds no record, SQS drops the second send if
  it comes within 5 minutes (TradingView retries within seconds) and step 3 records it.
  The other order (record, then send) would answer "duplicate" to that re-delivery of
  an alert that never reached the queue: a lost alert.
  A put costs 3 requests (1 for a known duplicate); a receive 1; an ack or release 1.
- After `maxReceiveCount` receives, SQS moves the message to the dead-letter queue
  (the queue's RedrivePolicy, set by `ensure_queue`); `dead_letters()` looks at it.

Every call goes through `clients.client` (bounded retries with backoff); every write is
keyed (deduplication id, conditional put), so a retry cannot double anything. A receive
carries a `ReceiveRequestAttemptId`, so a retried receive gets the same batch back
instead of hiding it for a visibility timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NoReturn

from trading_assets.adapters.aws.clients import AwsSetupError, client, error_code, explain
from trading_assets.adapters.aws.schema import (
    DLQ_RETENTION_SECONDS,
    QUEUE_MAX_RECEIVES,
    QUEUE_RETENTION_SECONDS,
    QUEUE_VISIBILITY_TIMEOUT_SECONDS,
)
from trading_assets.core.messaging import MAX_RECEIVE_BATCH, QueuedAlert, check_put, check_receive, check_release

log = logging.getLogger(__name__)

# SQS ids (deduplication, group): 1-128 printable ASCII characters without the space.
_SQS_ID = re.compile(r"[!-~]{1,128}")
_PEEK_VISIBILITY_SECONDS = 30
_STALE_RECEIPT = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "AWS.SimpleQueueService.MessageNotInflight",
                  "MessageNotInflight"}


def sqs_id(value: str) -> str:
    """`value` if SQS accepts it as a deduplication/group id, else a stable hash of it."""
    if _SQS_ID.fullmatch(value):
        return value
    return "sha256-" + hashlib.sha256(value.encode()).hexdigest()


def _fifo_name(name: str, what: str) -> str:
    if not name.endswith(".fifo"):
        raise ValueError(f"{what} {name!r}: a FIFO queue's name ends in .fifo")
    return name


def _reraise(exc: Exception, what: str) -> NoReturn:
    """Re-raise `exc`, as a clear AwsSetupError naming `what` if it is a setup problem."""
    setup = explain(exc, what)
    if setup is None:
        raise exc
    raise setup from exc


def alert_key(alert_id: str) -> dict[str, dict[str, str]]:
    """The dedupe record's key in the orders table."""
    return {"pk": {"S": f"alert#{alert_id}"}, "sk": {"S": "alert"}}


class SqsAlertQueue:
    """`core.messaging.AlertQueue` on SQS FIFO + a DynamoDB dedupe record (module doc)."""

    def __init__(self, region: str, queue_name: str, dedupe_table: str,
                 visibility_timeout_seconds: int | None = None) -> None:
        self.region = region
        self.queue_name = _fifo_name(queue_name, "alert queue")
        self.dedupe_table = dedupe_table
        self.visibility_timeout_seconds = visibility_timeout_seconds  # None: the queue's own
        self._sqs = client("sqs", region)
        self._ddb = client("dynamodb", region)
        self._url: str | None = None
        self._dlq_url: str | None = None

    def __repr__(self) -> str:
        return (f"SqsAlertQueue(region={self.region!r}, queue_name={self.queue_name!r}, "
                f"dedupe_table={self.dedupe_table!r})")

    # ------------------------------------------------------------------ plumbing

    def _queue_what(self) -> str:
        return f"SQS queue {self.queue_name} ({self.region})"

    def _queue_url(self) -> str:
        if self._url is None:
            try:
                self._url = self._sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
            except Exception as exc:
                _reraise(exc, self._queue_what())
        return self._url

    def _sqs_call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._sqs, method)(QueueUrl=self._queue_url(), **kwargs)
        except Exception as exc:
            if error_code(exc) in _STALE_RECEIPT and "ReceiptHandle" in kwargs:
                raise
            _reraise(exc, self._queue_what())

    def _table_what(self) -> str:
        return f"DynamoDB table {self.dedupe_table} (alert dedupe records)"

    # ------------------------------------------------------------------ producer

    def put(self, alert_id: str, body: str, group: str) -> bool:
        check_put(alert_id, body, group)
        if self._recorded(alert_id):
            return False
        message_id = self._send(alert_id, body, group)
        return self._record(alert_id, group, message_id)

    def _recorded(self, alert_id: str) -> bool:
        try:
            item = self._ddb.get_item(TableName=self.dedupe_table, Key=alert_key(alert_id), ConsistentRead=True,
                                      ProjectionExpression="pk")
        except Exception as exc:
            _reraise(exc, self._table_what())
        return "Item" in item

    def _send(self, alert_id: str, body: str, group: str) -> str:
        resp = self._sqs_call(
            "send_message", MessageBody=body, MessageGroupId=sqs_id(group),
            MessageDeduplicationId=sqs_id(alert_id),
            MessageAttributes={"alert_id": {"DataType": "String", "StringValue": alert_id},
                               "group": {"DataType": "String", "StringValue": group}})
        return str(resp.get("MessageId", ""))

    def _record(self, alert_id: str, group: str, message_id: str) -> bool:
        item = {**alert_key(alert_id), "kind": {"S": "alert"}, "group": {"S": group},
                "received_at": {"S": datetime.now(UTC).isoformat()}, "message_id": {"S": message_id or "-"}}
        try:
            self._ddb.put_item(TableName=self.dedupe_table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except Exception as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False  # a concurrent put of the same alert recorded it; SQS dropped our send
            _reraise(exc, self._table_what())
        return True

    # ------------------------------------------------------------------ consumer

    def receive(self, max_messages: int = 1, wait_seconds: float = 0) -> list[QueuedAlert]:
        check_receive(max_messages, wait_seconds)
        extra: dict[str, Any] = {}
        if self.visibility_timeout_seconds is not None:
            extra["VisibilityTimeout"] = int(self.visibility_timeout_seconds)
        resp = self._sqs_call(
            "receive_message", MaxNumberOfMessages=max_messages, WaitTimeSeconds=math.ceil(wait_seconds),
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId",
                                         "SequenceNumber"],
            MessageAttributeNames=["alert_id", "group"], ReceiveRequestAttemptId=uuid.uuid4().hex, **extra)
        return [self._alert(m) for m in resp.get("Messages", [])]

    @staticmethod
    def _alert(m: dict[str, Any], receive_offset: int = 0) -> QueuedAlert:
        attrs = m.get("Attributes", {})
        custom = m.get("MessageAttributes", {})
        sent = attrs.get("SentTimestamp")
        return QueuedAlert(
            alert_id=custom.get("alert_id", {}).get("StringValue") or attrs.get("MessageDeduplicationId", ""),
            body=m["Body"],
            group=custom.get("group", {}).get("StringValue") or attrs.get("MessageGroupId", ""),
            receive_count=int(attrs.get("ApproximateReceiveCount", 1)) - receive_offset,
            receipt=m.get("ReceiptHandle", ""),
            sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        )

    def ack(self, msg: QueuedAlert) -> None:
        if not msg.receipt:
            return  # a dead letter: nothing of ours to delete
        try:
            self._sqs_call("delete_message", ReceiptHandle=msg.receipt)
        except Exception as exc:
            if error_code(exc) not in _STALE_RECEIPT:
                raise
            log.warning("ack of alert %s ignored: its delivery is no longer ours (%s)", msg.alert_id, error_code(exc))

    def release(self, msg: QueuedAlert, delay_seconds: int = 0) -> None:
        check_release(delay_seconds)
        if not msg.receipt:
            return
        try:
            self._sqs_call("change_message_visibility", ReceiptHandle=msg.receipt, VisibilityTimeout=int(delay_seconds))
        except Exception as exc:
            if error_code(exc) not in _STALE_RECEIPT:
                raise
            log.warning("release of alert %s ignored: its delivery is no longer ours (%s)",
                        msg.alert_id, error_code(exc))

    # ------------------------------------------------------------------ inspection

    def _dead_letter_url(self) -> str:
        if self._dlq_url is None:
            attrs = self._sqs_call("get_queue_attributes", AttributeNames=["RedrivePolicy"]).get("Attributes", {})
            policy = attrs.get("RedrivePolicy")
            if not policy:
                raise AwsSetupError(f"{self._queue_what()} has no dead-letter queue (no RedrivePolicy): "
                                    "create it with `python -m trading_assets aws-bootstrap`")
            arn = json.loads(policy)["deadLetterTargetArn"]
            _, _, _, _, account, name = arn.split(":", 5)
            try:
                self._dlq_url = self._sqs.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            except Exception as exc:
                _reraise(exc, f"SQS dead-letter queue {name} ({self.region})")
        return self._dlq_url

    def dead_letters(self, limit: int = 100) -> list[QueuedAlert]:
        """A look at the dead-letter queue: its messages are received (hidden meanwhile),
        then made visible again. `receive_count` leaves out this look's own receive but
        counts earlier looks (SQS counts every receive). A group shows at most 10 per look
        (FIFO blocks a group while a batch of it is held)."""
        url = self._dead_letter_url()
        held: list[dict[str, Any]] = []
        try:
            while len(held) < limit:
                resp = self._sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=min(MAX_RECEIVE_BATCH, limit - len(held)), WaitTimeSeconds=0,
                    VisibilityTimeout=_PEEK_VISIBILITY_SECONDS, MessageAttributeNames=["alert_id", "group"],
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId",
                                                 "MessageDeduplicationId", "SequenceNumber"])
                batch = resp.get("Messages", [])
                if not batch:
                    break
                held.extend(batch)
        finally:
            for i in range(0, len(held), MAX_RECEIVE_BATCH):
                chunk = held[i:i + MAX_RECEIVE_BATCH]
                self._sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for n, m in enumerate(chunk)])
        held.sort(key=lambda m: int(m.get("Attributes", {}).get("SequenceNumber", 0)))
        return [replace(self._alert(m, receive_offset=1), receipt="") for m in held]

    def depth(self) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]
        attrs = self._sqs_call("get_queue_attributes", AttributeNames=names).get("Attributes", {})
        return sum(int(attrs.get(n, 0)) for n in names)


# ----------------------------------------------------------------------------- bootstrap


def _create_or_update(sqs: Any, name: str, attributes: dict[str, str]) -> str:
    """The queue's URL, creating it with `attributes`, or bringing an existing one's
    mutable attributes to them (so a changed max_receives or timeout takes effect)."""
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except Exception as exc:
        if "NonExistentQueue" not in error_code(exc) and error_code(exc) != "QueueDoesNotExist":
            _reraise(exc, f"SQS queue {name}")
    else:
        mutable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
        sqs.set_queue_attributes(QueueUrl=url, Attributes=mutable)
        return url
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def ensure_queue(region: str, queue_name: str, dlq_name: str, max_receives: int = QUEUE_MAX_RECEIVES,
                 visibility_timeout: int = QUEUE_VISIBILITY_TIMEOUT_SECONDS) -> str:
    """Create (or bring up to date) the FIFO dead-letter queue, then the FIFO alert queue
    redriving to it after `max_receives` receives; idempotent. Returns the queue's URL."""
    _fifo_name(queue_name, "alert queue")
    _fifo_name(dlq_name, "dead-letter queue")
    if max_receives < 1:
        raise ValueError(f"max_receives must be >= 1, got {max_receives!r}")
    sqs = client("sqs", region)
    dlq_url = _create_or_update(sqs, dlq_name, {"FifoQueue": "true",
                                                "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return _create_or_update(sqs, queue_name, {
        "FifoQueue": "true",
        "ContentBasedDeduplication": "false",  # the alert id is the deduplication id
        "VisibilityTimeout": str(int(visibility_timeout)),
        "MessageRetentionPeriod": str(QUEUE_RETENTION_SECONDS),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": int(max_receives)}),
    })
