"""The AWS commands of the command line: `aws-bootstrap` (create the world, idempotent)
and `run-aws` (the main job in TRADING_ENV=aws against a moto server on 127.0.0.1, offline),
and where a run's results are in the AWS world."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from trading_assets import settings

TAP_QUEUE = "trading-run-aws-tap"  # run-aws subscribes it to the topic to count notifications
MOTO_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_SESSION_TOKEN": "moto"}
RUN_AWS_ENV = {
    "TRADING_ENV": "aws",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "TRADING_S3_BUCKET": "trading-assets-local",
    # offline: the bundled replay bars and the paper broker (production: Twelve Data, Alpaca)
    "TRADING_MARKET_DATA": "replay",
    "TRADING_BROKER_EMA_CONCENTRATION": "paper",
}


def topic_name(aws: settings.AwsSettings) -> str:
    from trading_assets.adapters.aws.schema import TOPIC_NAME

    return aws.topic_arn.rsplit(":", 1)[-1] if aws.topic_arn else TOPIC_NAME


def bootstrap(aws: settings.AwsSettings):
    """Create (or find) every resource the AWS world needs; returns the adapter's World."""
    from trading_assets.adapters.aws.bootstrap import bootstrap as ensure_world

    return ensure_world(aws.region, bucket=aws.bucket, transactions_table=aws.transactions_table,
                        equity_table=aws.equity_table, orders_table=aws.orders_table,
                        alert_queue=aws.alert_queue, alert_dlq=aws.alert_dlq, topic_name=topic_name(aws),
                        secret_id=aws.secret_id)


def aws_bootstrap() -> int:
    world = bootstrap(settings.aws())
    print("trading_assets: the AWS world is ready")
    for line in world.lines():
        print(f"  {line}")
    if not settings.aws().topic_arn:
        print(f"  set TRADING_SNS_TOPIC_ARN={world.topic_arn} for the flows' notifications")
    return 0


def results_lines(aws: settings.AwsSettings) -> list[str]:
    """Where a run's results are: asset objects in S3, items per table, notifications."""
    from trading_assets.adapters.aws.clients import client

    s3, ddb = client("s3", aws.region), client("dynamodb", aws.region)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=aws.bucket, Prefix=aws.s3_prefix)
            for o in page.get("Contents", [])]
    per_asset: dict[str, int] = {}
    cached = 0  # the bar cache's series (IG prices), not asset frames
    for key in keys:
        asset = key.removeprefix(f"{aws.s3_prefix}/").rsplit("/", 1)[0]
        if asset.startswith("bar-cache/"):
            cached += 1
            continue
        per_asset[asset] = per_asset.get(asset, 0) + 1
    frames = len(keys) - cached
    lines = [f"  asset frames (Parquet per tick):         s3://{aws.bucket}/{aws.s3_prefix}/ ({frames} objects)"]
    lines += [f"      {asset}/<tick>.parquet: {n}" for asset, n in per_asset.items()]
    if cached:
        lines.append(f"  bar cache (a Parquet per market):        s3://{aws.bucket}/{aws.s3_prefix}/bar-cache/ "
                     f"({cached} series)")
    for table in (aws.orders_table, aws.transactions_table, aws.equity_table):
        count = sum(page["Count"] for page in ddb.get_paginator("scan").paginate(TableName=table, Select="COUNT"))
        lines.append(f"  DynamoDB {table + ':':<31} {count} items")
    return lines


@contextlib.contextmanager
def moto_world() -> Iterator[str]:
    """A moto server on 127.0.0.1 (from this venv), the environment pointed at it."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise SystemExit("run-aws needs moto (a dev dependency): make install") from None
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        settings.apply_environment({**RUN_AWS_ENV, **MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        yield endpoint
    finally:
        server.stop()


def tap_topic(region: str, topic_arn: str) -> str:
    """Subscribe a queue to the topic, so run-aws can show what was published."""
    from trading_assets.adapters.aws.clients import client

    sqs, sns = client("sqs", region), client("sns", region)
    url = sqs.create_queue(QueueName=TAP_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url


def published(region: str, tap_url: str) -> list[str]:
    import json

    from trading_assets.adapters.aws.clients import client

    sqs, out = client("sqs", region), []
    while True:
        batch = sqs.receive_message(QueueUrl=tap_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not batch:
            return out
        for m in batch:
            try:
                body = json.loads(m["Body"])
                out.append(f"{body.get('kind')}: {body.get('subject')}")
            except (ValueError, AttributeError):
                out.append(m["Body"][:100])
            sqs.delete_message(QueueUrl=tap_url, ReceiptHandle=m["ReceiptHandle"])


def run_aws(run_ticks) -> int:
    """Start moto, bootstrap the world with the production code, run the ticks in aws
    mode (`run_ticks()` prints their table and results), then say what was published."""
    import tempfile

    with moto_world() as endpoint:
        # a fresh paper account beside the fresh (in-memory) AWS world, so they agree
        settings.apply_environment({"TRADING_DATA_DIR": tempfile.mkdtemp(prefix="trading-run-aws-")})
        aws = settings.aws()
        world = bootstrap(aws)
        settings.apply_environment({"TRADING_SNS_TOPIC_ARN": world.topic_arn})
        tap = tap_topic(aws.region, world.topic_arn)
        print(f"moto server: {endpoint} (in memory; gone when this command ends)")
        for line in world.lines():
            print(f"  {line}")
        code = run_ticks()
        notes = published(aws.region, tap)
        print(f"  notifications published to {world.topic_arn}: {len(notes)}")
        for note in notes[:10]:
            print(f"      {note}")
        return code
