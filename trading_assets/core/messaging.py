"""The alert queue, the notifier and the secrets store, as small protocols and plain data.

The webhook gateway, the alert worker and the sensor only see these types, so the local
world (SQLite queue, log notifier) and the AWS world (SQS FIFO, SNS, Secrets Manager)
are swapped without touching them. Pure: no Dagster, no boto3.

The queue's contract is what the webhook flow relies on (the same suite runs against
every implementation):

- `put` answers True only once the alert is stored durably, and False for an alert id
  stored before, however long ago: the gateway says "accepted" or "duplicate" from it.
- Alerts of one group (a symbol) come out in the order they were put, and a group is
  blocked while one of its alerts is in flight: two alerts of one symbol are never
  processed at once or out of order. Groups do not block each other.
- A received alert is hidden for the visibility timeout, then delivered again (with a
  higher `receive_count`) unless acked: a consumer that dies loses nothing.
- After `max_receives` receives without an ack, the alert moves to the dead letters
  instead of being delivered again: a poison alert cannot block its symbol forever.
- Two consumers never hold the same alert at the same time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

#: SQS's limits, kept by every queue so code that runs locally runs on AWS too.
MAX_RECEIVE_BATCH = 10
MAX_WAIT_SECONDS = 20
MAX_VISIBILITY_SECONDS = 12 * 3600


@dataclass(frozen=True)
class QueuedAlert:
    """One alert as a consumer holds it. `receipt` is the handle of this delivery (ack and
    release need it; a later delivery of the same alert has another one); dead letters
    carry an empty receipt."""

    alert_id: str
    body: str
    group: str
    receive_count: int
    receipt: str = field(default="", repr=False)
    sent_at: datetime | None = None


@runtime_checkable
class AlertQueue(Protocol):
    """A durable FIFO queue of webhook alerts, deduplicated by alert id (see the module)."""

    def put(self, alert_id: str, body: str, group: str) -> bool:
        """Store an alert; True if newly stored, False if this alert id was stored before.
        Returns only once the alert is durable (raises otherwise: then answer 5xx)."""
        ...

    def receive(self, max_messages: int = 1, wait_seconds: float = 0) -> list[QueuedAlert]:
        """Up to `max_messages` (1..10) alerts, waiting up to `wait_seconds` (0..20) for
        one; each stays hidden from other consumers for the visibility timeout."""
        ...

    def ack(self, msg: QueuedAlert) -> None:
        """Done with it: delete it (the alert id stays known, so a re-delivery from the
        sender is still a duplicate)."""
        ...

    def release(self, msg: QueuedAlert, delay_seconds: int = 0) -> None:
        """Give it back: visible again after `delay_seconds` (its group stays blocked
        meanwhile, so order is kept). The receive still counts toward the dead letters."""
        ...

    def dead_letters(self, limit: int = 100) -> list[QueuedAlert]:
        """The alerts that were received `max_receives` times without an ack (a look, not
        a consume: they stay there), oldest first within a group."""
        ...

    def depth(self) -> int:
        """Alerts stored and not yet acked, in flight included (approximate on SQS): what
        a sensor or a check looks at to see a backlog."""
        ...


class NotificationKind(StrEnum):
    """What happened; subscribers filter on it (SNS message attribute `kind`)."""

    RUN_FAILURE = "run_failure"
    ORDER_REJECTED = "order_rejected"
    KILL_SWITCH = "kill_switch"
    DRIFT = "drift"
    DEAD_LETTER = "dead_letter"  # an alert gave up after max receives
    ALERT_REJECTED = "alert_rejected"  # a webhook body that failed validation
    STREAM_SILENT = "stream_silent"  # the price stream sent no tick for too long, or is down
    INFO = "info"

    @property
    def is_problem(self) -> bool:
        return self is not NotificationKind.INFO


@dataclass(frozen=True)
class Notification:
    """Something a person should hear about. `subject` is one short line (a mail subject);
    `message` the text; `details` plain JSON-able facts (ids, symbols, amounts)."""

    kind: NotificationKind
    subject: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    flow: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NotificationKind(self.kind))
        if self.at.tzinfo is None:
            raise ValueError(f"Notification.at has no timezone: {self.at!r}")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape subscribers get."""
        return {"kind": self.kind.value, "subject": self.subject, "message": self.message,
                "details": dict(self.details), "flow": self.flow, "time": self.at.isoformat()}


@runtime_checkable
class Notifier(Protocol):
    """Tells people. A failure to notify raises; callers on a failure path (a run-failure
    hook) catch it so the original error is not masked."""

    def notify(self, notification: Notification) -> None: ...


class SecretError(Exception):
    """A secret cannot be used as configured. Messages name the secret and the key, never
    a value."""


class MissingSecret(SecretError, LookupError):
    """The secret (or one key in it) does not exist; the message says how to create it."""

    def __init__(self, message: str, secret_id: str, key: str | None = None) -> None:
        super().__init__(message)
        self.secret_id = secret_id
        self.key = key


class MalformedSecret(SecretError, ValueError):
    """The secret exists but is not a JSON object of strings."""

    def __init__(self, message: str, secret_id: str) -> None:
        super().__init__(message)
        self.secret_id = secret_id


@runtime_checkable
class Secrets(Protocol):
    """Broker keys and passwords by name (`ALPACA_API_KEY`, ...)."""

    def get(self, name: str) -> str:
        """The value; raises MissingSecret naming the key and where it was looked for."""
        ...


def check_put(alert_id: str, body: str, group: str) -> None:
    """The arguments every queue refuses alike (a blank id would dedupe unrelated alerts)."""
    if not isinstance(alert_id, str) or not alert_id.strip():
        raise ValueError(f"alert_id: expected a non-empty string, got {alert_id!r}")
    if not isinstance(group, str) or not group.strip():
        raise ValueError(f"group: expected a non-empty string (e.g. the symbol), got {group!r}")
    if not isinstance(body, str):
        raise ValueError(f"body: expected a string, got {type(body).__name__}")


def check_receive(max_messages: int, wait_seconds: float) -> None:
    if not 1 <= max_messages <= MAX_RECEIVE_BATCH:
        raise ValueError(f"max_messages: expected 1..{MAX_RECEIVE_BATCH}, got {max_messages!r}")
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise ValueError(f"wait_seconds: expected 0..{MAX_WAIT_SECONDS}, got {wait_seconds!r}")


def check_release(delay_seconds: int) -> None:
    if not 0 <= delay_seconds <= MAX_VISIBILITY_SECONDS:
        raise ValueError(f"delay_seconds: expected 0..{MAX_VISIBILITY_SECONDS}, got {delay_seconds!r}")
