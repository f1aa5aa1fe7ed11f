"""A real moto server on 127.0.0.1 for the AWS adapters: boto3 talks HTTP to it exactly as
to AWS (`AWS_ENDPOINT_URL`), and moto applies DynamoDB's conditional-write, SQS's
visibility and FIFO, SNS's and Secrets Manager's rules (see aws-notes.md for its gaps).

Fixtures (imported by the suite's conftest):
- `moto_server`: one server per test session; its endpoint URL.
- `aws_env`: per test: state reset, dummy credentials, region, endpoint and the AWS-world
  names in the environment; yields the `settings.AwsSettings` the code will read.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10).read()


AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "TRADING_S3_BUCKET": "trading-test-bucket",
    "TRADING_DDB_TABLE_PREFIX": "trading-test",
    "TRADING_ALERT_QUEUE": "trading-test-alerts.fifo",
    "TRADING_SECRET_ID": "trading-test/brokers",
}


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """A clean moto world and the environment that points the code at it."""
    from trading_assets import settings

    reset_moto(moto_server)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    for name, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return settings.aws()
