"""Secrets Manager secrets on moto: the broker keys as the brokers' resources will read
them, the errors an operator gets when the secret is not there, rotation, and that no
value ever leaks into a repr, an exception or a log."""

from __future__ import annotations

import json
import logging
import traceback

import pytest

from trading_assets.adapters.aws.clients import client
from trading_assets.adapters.aws.secrets import SecretsManagerSecrets, ensure_secret
from trading_assets.core.messaging import MalformedSecret, MissingSecret, Secrets
from trading_assets.resources.messaging import AwsSecretsResource

KEY = "pk-live-5f1b2c9d0e"  # what must never show up anywhere but in get()'s answer
SECRET = "sk-live-aa90ff3e77"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(aws, values: dict | str) -> None:
    text = values if isinstance(values, str) else json.dumps(values)
    client("secretsmanager", aws.region).create_secret(Name=aws.secret_id, SecretString=text)


def rotate(aws, values: dict) -> None:
    client("secretsmanager", aws.region).put_secret_value(SecretId=aws.secret_id, SecretString=json.dumps(values))


def everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_get_reads_one_key_of_the_json_secret(aws_env):
    store(aws_env, {"ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET, "TRADOVATE_CID": 1234})
    secrets = SecretsManagerSecrets(aws_env.region, aws_env.secret_id)
    assert isinstance(secrets, Secrets)
    assert secrets.get("ALPACA_API_KEY") == KEY
    assert secrets.get("ALPACA_SECRET_KEY") == SECRET
    assert secrets.get("TRADOVATE_CID") == "1234"  # a number in the JSON is read as text
    assert secrets.names() == ["ALPACA_API_KEY", "ALPACA_SECRET_KEY", "TRADOVATE_CID"]


def test_missing_secret_names_it_and_how_to_create_it(aws_env):
    secrets = SecretsManagerSecrets(aws_env.region, aws_env.secret_id)
    with pytest.raises(MissingSecret) as info:
        secrets.get("ALPACA_API_KEY")
    text = str(info.value)
    assert f"secret {aws_env.secret_id} does not exist" in text
    assert f"aws secretsmanager create-secret --name {aws_env.secret_id}" in text
    assert "python -m trading_assets aws-bootstrap" in text
    assert (info.value.secret_id, info.value.key) == (aws_env.secret_id, None)


def test_missing_key_names_the_key_and_the_secret_but_no_value(aws_env):
    store(aws_env, {"ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET})
    with pytest.raises(MissingSecret) as info:
        SecretsManagerSecrets(aws_env.region, aws_env.secret_id).get("IG_PASSWORD")
    text = everything_said(info.value)
    assert f"key IG_PASSWORD is not in Secrets Manager secret {aws_env.secret_id}" in text
    assert "keys present: ALPACA_API_KEY, ALPACA_SECRET_KEY" in text
    assert KEY not in text and SECRET not in text
    assert (info.value.secret_id, info.value.key) == (aws_env.secret_id, "IG_PASSWORD")


@pytest.mark.parametrize("text", [f"ALPACA_API_KEY={KEY}", json.dumps([KEY, SECRET]), json.dumps({"A": {"k": KEY}})],
                         ids=["not-json", "json-array", "nested-value"])
def test_a_secret_that_is_not_a_json_object_of_strings_is_a_clear_error_without_its_value(aws_env, text):
    store(aws_env, text)
    with pytest.raises(MalformedSecret, match=f"secret {aws_env.secret_id}") as info:
        SecretsManagerSecrets(aws_env.region, aws_env.secret_id).get("ALPACA_API_KEY")
    said = everything_said(info.value)
    assert KEY not in said and SECRET not in said


def test_a_rotated_value_is_picked_up_after_the_ttl_and_not_before(aws_env):
    store(aws_env, {"ALPACA_API_KEY": KEY})
    clock = Clock()
    secrets = SecretsManagerSecrets(aws_env.region, aws_env.secret_id, ttl_seconds=300, clock=clock)
    assert secrets.get("ALPACA_API_KEY") == KEY
    rotate(aws_env, {"ALPACA_API_KEY": "pk-rotated"})
    clock.now += 299
    assert secrets.get("ALPACA_API_KEY") == KEY  # cached: one Secrets Manager call per TTL
    clock.now += 1
    assert secrets.get("ALPACA_API_KEY") == "pk-rotated"


def test_a_key_added_to_the_secret_is_found_without_waiting_for_the_ttl(aws_env):
    store(aws_env, {"ALPACA_API_KEY": KEY})
    clock = Clock()
    secrets = SecretsManagerSecrets(aws_env.region, aws_env.secret_id, ttl_seconds=300, clock=clock)
    assert secrets.get("ALPACA_API_KEY") == KEY
    rotate(aws_env, {"ALPACA_API_KEY": KEY, "IG_API_KEY": "ig-new"})
    clock.now += 10
    assert secrets.get("IG_API_KEY") == "ig-new"


def test_no_value_in_repr_str_exceptions_or_logs(aws_env, caplog):
    caplog.set_level(logging.DEBUG)  # botocore's DEBUG records print request params and response bodies
    ensure_secret(aws_env.region, aws_env.secret_id, {"ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET})
    secrets = SecretsManagerSecrets(aws_env.region, aws_env.secret_id)
    assert secrets.get("ALPACA_SECRET_KEY") == SECRET
    with pytest.raises(MissingSecret) as info:
        secrets.get("NOPE")
    resource = AwsSecretsResource(region=aws_env.region, secret_id=aws_env.secret_id)
    assert resource.get("ALPACA_API_KEY") == KEY
    said = [repr(secrets), str(secrets), everything_said(info.value), repr(resource), str(resource), caplog.text]
    assert any("botocore" in r.name for r in caplog.records)  # the DEBUG records were there to leak
    for text in said:
        assert KEY not in text and SECRET not in text, text[:2000]


def test_ensure_secret_creates_once_and_never_overwrites(aws_env):
    assert ensure_secret(aws_env.region, aws_env.secret_id, {"ALPACA_API_KEY": "placeholder"}) is True
    rotate(aws_env, {"ALPACA_API_KEY": KEY})
    assert ensure_secret(aws_env.region, aws_env.secret_id, {"ALPACA_API_KEY": "placeholder"}) is False
    assert SecretsManagerSecrets(aws_env.region, aws_env.secret_id).get("ALPACA_API_KEY") == KEY


def test_resource_get_returns_the_adapter(aws_env):
    store(aws_env, {"ALPACA_API_KEY": KEY})
    adapter = AwsSecretsResource(region=aws_env.region, secret_id=aws_env.secret_id).get()
    assert isinstance(adapter, SecretsManagerSecrets)
    assert adapter.get("ALPACA_API_KEY") == KEY
