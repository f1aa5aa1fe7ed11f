"""Create the AWS world the code expects, idempotently: the three DynamoDB tables, the
asset bucket, the FIFO alert queue and its DLQ, the notification topic and the secret.

`python -m trading_assets aws-bootstrap` runs this against the account (or the moto
server of `make run-aws`); the CDK stack in deploy/ declares the same resources from the
same `schema` module. Nothing here overwrites data or a secret's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trading_assets.adapters.aws import clients
from trading_assets.adapters.aws.dynamodb_ledger import ensure_tables
from trading_assets.adapters.aws.schema import QUEUE_MAX_RECEIVES, QUEUE_VISIBILITY_TIMEOUT_SECONDS
from trading_assets.adapters.aws.secrets import ensure_secret
from trading_assets.adapters.aws.sns_notifier import ensure_topic
from trading_assets.adapters.aws.sqs_queue import ensure_queue


@dataclass
class World:
    """What exists after a bootstrap, and what this call created."""

    region: str
    tables: list[str]
    bucket: str
    queue_url: str
    topic_arn: str
    secret_id: str
    created: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"region:          {self.region}",
            f"DynamoDB tables: {', '.join(self.tables)}",
            f"S3 bucket:       s3://{self.bucket}",
            f"alert queue:     {self.queue_url}",
            f"topic:           {self.topic_arn}",
            f"secret:          {self.secret_id}",
            f"created now:     {', '.join(self.created) or 'nothing (all existed)'}",
        ]


def ensure_bucket(region: str, bucket: str) -> bool:
    """Create the bucket if it does not exist (private, versioned); True if created."""
    s3 = clients.client("s3", region)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except Exception as exc:
        if clients.error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            setup = clients.explain(exc, f"S3 bucket {bucket}")
            if setup is not None:
                raise setup from exc
            raise
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **kwargs)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return True


def bootstrap(region: str, *, bucket: str, transactions_table: str, equity_table: str, orders_table: str,
              alert_queue: str, alert_dlq: str, topic_name: str, secret_id: str) -> World:
    """Bring every resource into existence (a second call creates nothing)."""
    created = ensure_tables(region, transactions_table, equity_table, orders_table)
    if ensure_bucket(region, bucket):
        created.append(f"s3://{bucket}")
    queue_url = ensure_queue(region, alert_queue, alert_dlq, QUEUE_MAX_RECEIVES, QUEUE_VISIBILITY_TIMEOUT_SECONDS)
    topic_arn = ensure_topic(region, topic_name)
    if ensure_secret(region, secret_id, {}):
        created.append(f"secret {secret_id} (empty: put the broker keys in it)")
    return World(region=region, tables=[transactions_table, equity_table, orders_table], bucket=bucket,
                 queue_url=queue_url, topic_arn=topic_arn, secret_id=secret_id, created=created)
