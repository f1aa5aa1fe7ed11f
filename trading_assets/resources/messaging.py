"""Messaging resources: the alert queue (SQLite locally, SQS FIFO on AWS), the notifier
(log locally, SNS on AWS) and the secrets store (Secrets Manager on AWS).

Each `get()` returns the adapter behind a `core.messaging` protocol, so an asset, sensor
or hook takes `AlertQueueResource` / `NotifierResource` / `AwsSecretsResource` and does
not care which world it runs in. None of these fields is a secret: they are names
(paths, queue names, ARNs, the secret's id), the values stay in Secrets Manager.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import overload

import dagster as dg

from trading_assets.adapters.aws.schema import QUEUE_MAX_RECEIVES, QUEUE_VISIBILITY_TIMEOUT_SECONDS
from trading_assets.core.messaging import AlertQueue, Notifier, Secrets


class AlertQueueResource(dg.ConfigurableResource, ABC):
    """The webhook alert queue; `get()` returns a `core.messaging.AlertQueue`."""

    @abstractmethod
    def get(self) -> AlertQueue: ...


class SqliteAlertQueueResource(AlertQueueResource):
    """The local queue in one SQLite file (shared by the gateway, worker and sensor)."""

    path: str
    visibility_timeout_seconds: float = QUEUE_VISIBILITY_TIMEOUT_SECONDS
    max_receives: int = QUEUE_MAX_RECEIVES

    def get(self) -> AlertQueue:
        from trading_assets.adapters.sqlite.queue import SqliteAlertQueue

        return SqliteAlertQueue(self.path, self.visibility_timeout_seconds, self.max_receives)


class SqsAlertQueueResource(AlertQueueResource):
    """SQS FIFO (`queue_name` ends in .fifo) with the dedupe records in `dedupe_table`
    (the `<prefix>-orders` table). Visibility timeout and max receives are the queue's
    own (set by `aws-bootstrap` / the stack); `visibility_timeout_seconds` overrides the
    former per receive."""

    region: str
    queue_name: str
    dedupe_table: str
    visibility_timeout_seconds: int | None = None

    def get(self) -> AlertQueue:
        from trading_assets.adapters.aws.sqs_queue import SqsAlertQueue

        return SqsAlertQueue(self.region, self.queue_name, self.dedupe_table, self.visibility_timeout_seconds)


class NotifierResource(dg.ConfigurableResource, ABC):
    """Where run failures, rejected orders, the kill switch and drift are reported."""

    @abstractmethod
    def get(self) -> Notifier: ...


class LogNotifierResource(NotifierResource):
    """Notifications into the log (WARNING for problems); the local default."""

    logger_name: str = "trading_assets.notifications"
    keep: int = 100

    def get(self) -> Notifier:
        from trading_assets.adapters.log_notifier import LogNotifier

        return LogNotifier(self.logger_name, self.keep)


class SnsNotifierResource(NotifierResource):
    """Notifications published to an SNS topic (`settings.aws().topic_arn`)."""

    region: str
    topic_arn: str

    def get(self) -> Notifier:
        from trading_assets.adapters.aws.sns_notifier import SnsNotifier

        return SnsNotifier(self.region, self.topic_arn)


class AwsSecretsResource(dg.ConfigurableResource):
    """The broker keys from one Secrets Manager JSON secret. `get()` returns the
    `core.messaging.Secrets` adapter (it fetches at first use and caches for
    `ttl_seconds`: hold it in a long-lived process such as the gateway);
    `get("ALPACA_API_KEY")` one value, fetched now."""

    region: str
    secret_id: str
    ttl_seconds: float = 300

    @overload
    def get(self) -> Secrets: ...

    @overload
    def get(self, name: str) -> str: ...

    def get(self, name: str | None = None) -> Secrets | str:
        from trading_assets.adapters.aws.secrets import SecretsManagerSecrets

        secrets = SecretsManagerSecrets(self.region, self.secret_id, self.ttl_seconds)
        return secrets if name is None else secrets.get(name)


# ----------------------------------------------------------------------------- by environment


def alert_queue_resource(env: str, *, base: Path | None = None) -> AlertQueueResource:
    """The alert queue of `env`: `alerts.sqlite` under `base` (default TRADING_DATA_DIR)
    locally, the SQS FIFO queue named by `settings.aws()` in aws mode. The gateway, the
    worker and the Dagster definitions all take it from here, so they share one queue."""
    from trading_assets import settings

    if env == "local":
        return SqliteAlertQueueResource(path=str((base or settings.data_dir()) / "alerts.sqlite"))
    if env == "aws":
        aws = settings.aws()
        return SqsAlertQueueResource(region=aws.region, queue_name=aws.alert_queue, dedupe_table=aws.orders_table)
    raise ValueError(f"no alert queue for TRADING_ENV={env!r}")


def notifier_resource(env: str) -> NotifierResource:
    """SNS in aws mode (the log until TRADING_SNS_TOPIC_ARN is set), the log locally."""
    from trading_assets import settings

    if env == "aws" and (aws := settings.aws()).topic_arn:
        return SnsNotifierResource(region=aws.region, topic_arn=aws.topic_arn)
    return LogNotifierResource()
