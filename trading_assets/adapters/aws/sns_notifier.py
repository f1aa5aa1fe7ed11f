"""Notifications on AWS: one SNS topic (e-mail, chat, on-call subscribe to it).

Each notification is published with
- `Subject`: the notification's subject made acceptable to SNS (ASCII printable, one
  line, at most 100 characters; e-mail subscribers see it as the mail subject). SNS
  refuses a publish with a bad subject, and a refused notification is a lost one;
- `Message`: JSON `{kind, subject, message, details, flow, time}` (the full subject);
- `MessageAttributes`: `kind` (and `flow` when there is one), so a subscription can
  filter, e.g. `{"kind": ["run_failure", "kill_switch"]}` for the pager.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

from trading_assets.adapters.aws.clients import AwsSetupError, client, explain
from trading_assets.core.messaging import Notification

SUBJECT_MAX = 100
# SNS takes at most 256 KiB per message, attributes included; keep a margin for them.
_MESSAGE_MAX_BYTES = 250_000


def sns_subject(text: str, fallback: str = "notification") -> str:
    """`text` as SNS accepts a Subject: accents folded to ASCII ("é" -> "e"), any other
    non-ASCII character as "?", line breaks and control characters as spaces, runs of
    spaces collapsed, cut to 100 characters with "..."; `fallback` if nothing is left."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    ascii_only = "".join(c if c.isascii() else "?" for c in folded)
    one_line = " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", ascii_only).split())
    if len(one_line) > SUBJECT_MAX:
        one_line = one_line[:SUBJECT_MAX - 3].rstrip() + "..."
    return one_line or fallback


def sns_message(notification: Notification) -> str:
    """The JSON body; details too large for SNS are replaced by their keys."""
    body = notification.as_dict()
    text = json.dumps(body, default=str, ensure_ascii=False)
    if len(text.encode()) > _MESSAGE_MAX_BYTES:
        body["details"] = {"truncated": True, "keys": sorted(map(str, notification.details))[:200]}
        body["message"] = body["message"][:50_000]
        text = json.dumps(body, default=str, ensure_ascii=False)
    return text


class SnsNotifier:
    """`core.messaging.Notifier` publishing to an SNS topic (module doc for the shape)."""

    def __init__(self, region: str, topic_arn: str | None) -> None:
        if not topic_arn or not topic_arn.startswith("arn:"):
            raise AwsSetupError(f"no SNS topic to notify ({topic_arn!r}): set TRADING_SNS_TOPIC_ARN to the topic's "
                                "ARN (`python -m trading_assets aws-bootstrap` creates the topic and prints it)")
        self.region = region
        self.topic_arn = topic_arn
        self._sns = client("sns", region)

    def __repr__(self) -> str:
        return f"SnsNotifier(region={self.region!r}, topic_arn={self.topic_arn!r})"

    def notify(self, notification: Notification) -> None:
        message = sns_message(notification)
        attributes = {"kind": {"DataType": "String", "StringValue": notification.kind.value}}
        if notification.flow:
            attributes["flow"] = {"DataType": "String", "StringValue": notification.flow}
        extra: dict[str, Any] = {}
        if self.topic_arn.endswith(".fifo"):
            extra = {"MessageGroupId": notification.kind.value,
                     "MessageDeduplicationId": hashlib.sha256(message.encode()).hexdigest()}
        try:
            self._sns.publish(TopicArn=self.topic_arn, Message=message, MessageAttributes=attributes,
                              Subject=sns_subject(notification.subject, notification.kind.value), **extra)
        except Exception as exc:
            setup = explain(exc, f"SNS topic {self.topic_arn}")
            if setup is None:
                raise
            raise setup from exc


def ensure_topic(region: str, name: str) -> str:
    """Create the topic if missing (SNS's CreateTopic is idempotent); its ARN."""
    attributes = {"FifoTopic": "true"} if name.endswith(".fifo") else {}
    sns = client("sns", region)
    try:
        return sns.create_topic(Name=name, Attributes=attributes)["TopicArn"]
    except Exception as exc:
        setup = explain(exc, f"SNS topic {name}")
        if setup is None:
            raise
        raise setup from exc
