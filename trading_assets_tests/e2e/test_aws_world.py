"""The AWS world end to end, offline: TRADING_ENV=aws against a real moto server, the EMA
flow trading the fake Alpaca with its keys read from Secrets Manager, frames in S3, the
ledger and the ledger-shaped assets in DynamoDB, notifications on SNS; the bootstrap
command; `run-aws` (what `make run-aws` runs) printing the same table as `make run`."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import dagster as dg
import pytest

from trading_assets import settings
from trading_assets.adapters.aws.dynamodb_ledger import DynamoDbLedger
from trading_assets.cli_aws import bootstrap, tap_topic
from trading_assets.defs.ema_concentration.assets import FLOW_ASSETS
from trading_assets.defs.resources import resources_for
from trading_assets_tests.e2e.cli_world import FLOW, LATER_TICK, ROOT, TICK, TQQQ_PRICE
from trading_assets_tests.fakes.alpaca import API_KEY, SECRET_KEY, FakeAlpaca


@pytest.fixture
def world(aws_env, tmp_path, monkeypatch):
    """The bootstrapped AWS world (moto), the flow's broker a FakeAlpaca whose keys are only
    in the Secrets Manager secret (not in the environment)."""
    fake = FakeAlpaca()
    fake.start()
    fake.set_price("TQQQ", TQQQ_PRICE)
    for name, value in {"TRADING_ENV": "aws", "TRADING_MARKET_DATA": "replay", "ALPACA_BASE_URL": fake.url,
                        "TRADING_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY", "TRADING_BROKER_EMA_CONCENTRATION"):
        monkeypatch.delenv(name, raising=False)
    created = bootstrap(settings.aws())
    monkeypatch.setenv("TRADING_SNS_TOPIC_ARN", created.topic_arn)
    keys = {"ALPACA_API_KEY": API_KEY, "ALPACA_SECRET_KEY": SECRET_KEY}
    boto3.client("secretsmanager").put_secret_value(SecretId=aws_env.secret_id, SecretString=json.dumps(keys))
    try:
        yield fake, created
    finally:
        fake.stop()


def test_the_flow_trades_once_in_aws_mode_and_its_results_live_in_s3_and_dynamodb(world, aws_env):
    fake, _ = world
    resources = resources_for("aws")
    assert dg.materialize(FLOW_ASSETS, resources=resources, partition_key=TICK).success
    assert dg.materialize(FLOW_ASSETS, resources=resources, partition_key=TICK).success  # rerun
    assert (fake.order_posts(), fake.order_count()) == (1, 1)

    ledger = DynamoDbLedger(aws_env.region, aws_env.transactions_table, aws_env.equity_table, aws_env.orders_table)
    [intent] = ledger.intents(FLOW, TICK)
    assert (intent.symbol, intent.side.value, intent.status) == ("TQQQ", "buy", "filled")
    fills = ledger.transactions(flow=FLOW, partition_key=TICK)
    assert list(fills["qty"]) == [intent.qty]

    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=aws_env.bucket)["Contents"]}
    assert {f"assets/{FLOW}/{a}/{TICK}.parquet" for a in ("bars", "indicators", "signals", "orders")} == keys
    # the ledger-shaped assets are the ledger's own items, loaded back by query
    defs = dg.Definitions(assets=FLOW_ASSETS, resources=resources)
    stored = defs.load_asset_value([FLOW, "transactions"], partition_key=TICK)
    assert list(stored["transaction_id"]) == list(fills["transaction_id"])
    curve = defs.load_asset_value([FLOW, "equity"], partition_key=TICK)
    assert list(curve["partition_key"]) == [TICK]


def test_a_kill_switch_in_aws_mode_reaches_the_topic(world, aws_env, monkeypatch):
    _, created = world
    tap = tap_topic(aws_env.region, created.topic_arn)
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    assert not dg.materialize(FLOW_ASSETS, resources=resources_for("aws"), partition_key=TICK,
                              raise_on_error=False).success
    [message] = boto3.client("sqs").receive_message(QueueUrl=tap, MaxNumberOfMessages=10)["Messages"]
    body = json.loads(message["Body"])
    assert body["kind"] == "kill_switch" and body["flow"] == FLOW and TICK in body["subject"]
    assert API_KEY not in message["Body"] and SECRET_KEY not in message["Body"]


def test_a_key_missing_from_the_secret_fails_the_tick_naming_it(world, aws_env):
    boto3.client("secretsmanager").put_secret_value(SecretId=aws_env.secret_id, SecretString="{}")
    result = dg.materialize(FLOW_ASSETS, resources=resources_for("aws"), partition_key=TICK, raise_on_error=False)
    assert not result.success
    errors = [e.event_specific_data.error for e in result.all_events if e.is_step_failure]
    text = " ".join(str(err.to_string()) for err in errors)
    assert "ALPACA_API_KEY" in text and aws_env.secret_id in text


def test_bootstrap_is_idempotent_and_says_what_it_created(aws_env):
    first = bootstrap(aws_env)
    assert set(first.tables) <= set(first.created) and f"s3://{aws_env.bucket}" in first.created
    again = bootstrap(aws_env)
    assert again.created == [] and again.topic_arn == first.topic_arn and again.queue_url == first.queue_url


def test_aws_mode_without_its_names_is_a_clear_error(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRADING_ENV": "aws", "AWS_REGION": "us-east-1",
           "TRADING_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "trading_assets", "run", "--tick", TICK], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TRADING_S3_BUCKET is not set" in done.stderr and "aws-bootstrap" in done.stderr


def test_run_aws_prints_the_local_table_and_where_the_results_are(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TRADING_DATA_DIR": str(tmp_path / "local"),
           "DAGSTER_TELEMETRY_ENABLED": "false", "YF_DISABLE_CURL_CFFI": "1"}
    ticks = ["--tick", TICK, "--tick", LATER_TICK]

    def table(command: str) -> tuple[list[str], str]:
        done = subprocess.run([sys.executable, "-m", "trading_assets", command, *ticks], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        return [line for line in done.stdout.splitlines() if line.startswith("2025-")], done.stdout

    local, _ = table("run")
    aws, out = table("run-aws")
    assert aws == local and len(aws) == 2  # the same trades and equity in both worlds
    assert "s3://trading-assets-local/assets/ (8 objects)" in out
    assert "DynamoDB trading-transactions:           1 items" in out
    assert "TRADING_ENV=aws" in out and "notifications published to arn:aws:sns:" in out


@pytest.mark.parametrize(("env", "says"), [
    ({"TRADING_S3_BUCKET": "b"}, "AWS_REGION is not set"),
    ({"TRADING_S3_BUCKET": "b", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
     "no AWS credentials for DynamoDB table trading-transactions"),
])
def test_bootstrap_without_region_or_credentials_is_one_clear_line(tmp_path, env, says):
    done = subprocess.run([sys.executable, "-m", "trading_assets", "aws-bootstrap"], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true",
                               "AWS_CONFIG_FILE": str(tmp_path / "none"),
                               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), **env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: {says}") and "Traceback" not in done.stderr
