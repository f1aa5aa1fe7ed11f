"""Fuzzed bodies against the running endpoint: valid alerts mutated (fields dropped or
given wrong types, NaN/inf/strings for prices, placeholders left unfilled, the
passphrase spoiled), random JSON and random bytes, under either content type. Every
answer is a 200 or a 4xx, never a 5xx; a 4xx stores nothing; a 200 stores exactly what it
says (accepted: one more alert; duplicate: none)."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from trading_assets.gateway.samples import sample_names
from trading_assets_tests.gateway.conftest import PASSPHRASE, alert, sqlite_world, sqs_world

EXAMPLES = 500


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    world = sqlite_world(tmp_path_factory.mktemp("fuzz"))
    with world.serve() as client:
        yield client


@pytest.fixture
def sqs_gw(aws_env):
    world = sqs_world(aws_env)
    with world.serve() as client:
        yield client


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    return out


PLACEHOLDERS = ["{{close}}", "{{ticker}}", "{{time}}", "{{timenow}}", "{{interval}}", "{{exchange}}",
                "{{strategy.order.action}}"]
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "nan", "inf", "-Infinity", "1e999", "", " ", "0",
                     "-1", "abc", *PLACEHOLDERS]),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4),
                    max_leaves=20)


@st.composite
def mutated_alert(draw) -> dict[str, Any]:
    body = alert(draw(st.sampled_from(sample_names())))
    if draw(st.booleans()):  # a new alert (accepted, then duplicate when drawn again)
        fired = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)))
        body["market_data"]["timenow"] = fired.strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        paths = _paths(body)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(JUNK)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=8))] = draw(JSON)
    return body


BODIES = st.one_of(
    mutated_alert().map(lambda b: json.dumps(b).encode()),  # allow_nan: Pine can write NaN literally
    JSON.map(lambda b: json.dumps(b).encode()),
    st.dictionaries(st.text(max_size=10), JSON, max_size=5).map(
        lambda d: json.dumps({"passphrase": PASSPHRASE, **d}).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)
CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "text/plain; charset=utf-8", None,
                                 "application/x-www-form-urlencoded"])


def check_answer(gw, raw: bytes, content_type: str | None) -> None:
    before = gw.depth()
    r = gw.post(None, raw=raw, content_type=content_type)
    event(f"{r.status_code} {r.json().get('status') if r.content else ''}")
    assert r.status_code < 500, (raw[:300], r.text)
    answer = r.json()
    after = gw.depth()
    if r.status_code == 200:
        assert answer["status"] in ("accepted", "duplicate") and answer["alert_id"].startswith("tv-")
        assert after == before + (answer["status"] == "accepted"), (raw[:300], answer)
    else:
        assert r.status_code in (401, 413, 422), (raw[:300], r.text)
        assert answer["status"] in ("rejected", "unauthorized") and "error" in answer and "field" in answer
        assert after == before, f"a {r.status_code} stored something: {raw[:300]!r}"


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@fuzz(EXAMPLES)
@given(raw=BODIES, content_type=CONTENT_TYPES)
def test_fuzzed_bodies_get_a_200_or_a_4xx_and_a_4xx_stores_nothing(gw, raw, content_type):
    check_answer(gw, raw, content_type)


@fuzz(60)
@given(raw=mutated_alert().map(lambda b: json.dumps(b).encode()), content_type=CONTENT_TYPES)
def test_fuzzed_alerts_on_sqs_get_a_200_or_a_4xx_and_a_4xx_stores_nothing(sqs_gw, raw, content_type):
    check_answer(sqs_gw, raw, content_type)


@fuzz(100)
@given(name=st.sampled_from(sample_names()), field=st.sampled_from(["open", "high", "low", "close", "volume"]),
       value=st.sampled_from([math.nan, math.inf, -math.inf, "NaN", "Infinity", "{{close}}", "", None, True,
                              [], {}, "12,5"]))
def test_a_bad_price_is_a_422_naming_it(gw, name, field, value):
    body = alert(name)
    body["price_data"][field] = value
    before = gw.depth()
    r = gw.post(body)
    assert r.status_code == 422 and r.json()["field"] == f"price_data.{field}", r.text
    assert gw.depth() == before
