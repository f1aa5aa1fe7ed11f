"""aws mode: broker and market-data credentials come from the one Secrets Manager JSON
secret at run time (real moto server), by the same key names as the environment locally;
a missing key is a clear error naming it and the secret; no value shows in repr/config."""

import json

import boto3
import pytest

from trading_assets.core.messaging import MissingSecret
from trading_assets.resources.brokers import broker_resource
from trading_assets.resources.market_data import market_data_resource
from trading_assets.resources.messaging import AwsSecretsResource

KEYS = {"TRADOVATE_USERNAME": "tv-user", "TRADOVATE_PASSWORD": "tv-pw-9f3", "TRADOVATE_APP_ID": "app",
        "TRADOVATE_CID": "4242", "TRADOVATE_SEC": "tv-sec-77", "TWELVE_DATA_API_KEY": "td-key-551"}


@pytest.fixture
def store(aws_env):
    boto3.client("secretsmanager").create_secret(Name=aws_env.secret_id, SecretString=json.dumps(KEYS))
    return AwsSecretsResource(region=aws_env.region, secret_id=aws_env.secret_id)


def test_credentials_are_read_from_the_secret_when_the_resource_is_used(store):
    resource = broker_resource("tradovate", secrets=store)
    assert resource.username is None and resource.password is None  # nothing read at definition time
    inner = resource.get().inner
    assert (inner._username, inner._password, inner._cid, inner._sec) == ("tv-user", "tv-pw-9f3", 4242, "tv-sec-77")
    bars = market_data_resource("twelve_data", secrets=store).get()
    assert bars._api_key == "td-key-551"


def test_a_key_missing_from_the_secret_names_the_key_and_the_secret(store, aws_env):
    with pytest.raises(MissingSecret) as caught:
        broker_resource("alpaca", secrets=store).get()
    assert "ALPACA_API_KEY" in str(caught.value) and aws_env.secret_id in str(caught.value)


def test_no_secret_value_in_repr_or_config(store):
    resource = broker_resource("tradovate", secrets=store)
    resolved = resource._outside_run_copy()
    shown = repr(resolved) + repr(resource) + json.dumps(resource._convert_to_config_dictionary(), default=str)
    for value in ("tv-pw-9f3", "tv-sec-77"):
        assert value not in shown
