"""The gateway under test is always a real uvicorn on 127.0.0.1 (a thread here, a
subprocess for the CLI), spoken to over HTTP or a raw socket.

- `world`: the queue of one kind (`sqlite` in a tmp dir, or `sqs` on the moto server,
  bootstrapped with the production code, with the passphrase in Secrets Manager), and
  `world.serve(...)` to run a gateway over it;
- `FlakyQueue`: a queue wrapper that fails chosen puts, before or after storing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from trading_assets.core.messaging import AlertQueue
from trading_assets.gateway import WEBHOOK_PATH, RunningGateway, create_app, start_in_thread
from trading_assets.gateway.samples import sample

PASSPHRASE = "correct horse battery staple"


def alert(name: str = "long_entry", passphrase: Any = PASSPHRASE, **market: str) -> dict[str, Any]:
    """A sample alert with the passphrase (None: without one); `market` overrides
    market_data fields (e.g. timenow=... for a distinct alert)."""
    body = sample(name)
    body["market_data"].update(market)
    return body if passphrase is None else {"passphrase": passphrase, **body}


def distinct(i: int, name: str = "long_entry", symbol: str = "MNQ1!") -> dict[str, Any]:
    """The i-th of a run of alerts that differ only in when they fired."""
    fired = datetime(2025, 11, 18, 14, 40, tzinfo=UTC) + timedelta(seconds=i)
    return alert(name, symbol=symbol, timenow=fired.strftime("%Y-%m-%dT%H:%M:%SZ"))


class Client:
    """POSTs to one gateway; `post` returns the response, `depth` asks the queue."""

    def __init__(self, gateway: RunningGateway, queue: AlertQueue) -> None:
        self.url = gateway.url
        self.webhook = gateway.url + WEBHOOK_PATH
        self.queue = queue
        self.session = requests.Session()

    def post(self, body: Any, content_type: str | None = "application/json", raw: bytes | None = None,
             **kwargs: Any) -> requests.Response:
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content_type else {}
        return self.session.post(self.webhook, data=data, headers=headers, timeout=10, **kwargs)

    def depth(self) -> int:
        return self.queue.depth()


@dataclass
class World:
    kind: str
    queue: AlertQueue
    passphrase: Callable[[], str]
    set_passphrase: Callable[[str], None]
    gateways: list[RunningGateway] = field(default_factory=list)

    @contextmanager
    def serve(self, queue: AlertQueue | None = None, **kwargs: Any) -> Iterator[Client]:
        app = create_app(queue or self.queue, kwargs.pop("passphrase", self.passphrase), **kwargs)
        with start_in_thread(app) as gateway:
            yield Client(gateway, self.queue)


def sqlite_world(tmp_path: Path) -> World:
    from trading_assets.resources.messaging import alert_queue_resource

    box = {"value": PASSPHRASE}
    queue = alert_queue_resource("local", base=tmp_path).get()
    return World("sqlite", queue, lambda: box["value"], lambda v: box.__setitem__("value", v))


def sqs_world(aws: Any) -> World:
    """The AWS world as aws-bootstrap would leave it, plus the passphrase in the secret; the
    queue and the passphrase source are what `python -m trading_assets gateway` builds."""
    from trading_assets.adapters.aws.clients import client
    from trading_assets.adapters.aws.dynamodb_ledger import ensure_tables
    from trading_assets.adapters.aws.secrets import ensure_secret
    from trading_assets.adapters.aws.sqs_queue import ensure_queue
    from trading_assets.cli import _gateway_world

    ensure_tables(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table)
    ensure_queue(aws.region, aws.alert_queue, aws.alert_dlq)
    ensure_secret(aws.region, aws.secret_id, {"TRADINGVIEW_PASSPHRASE": PASSPHRASE})
    queue, passphrase, _ = _gateway_world("aws")
    sm = client("secretsmanager", aws.region)

    def rotate(value: str) -> None:
        sm.put_secret_value(SecretId=aws.secret_id, SecretString=json.dumps({"TRADINGVIEW_PASSPHRASE": value}))

    return World("sqs", queue, passphrase, rotate)


@pytest.fixture(params=["sqlite", "sqs"])
def world(request, tmp_path) -> World:
    if request.param == "sqs":
        return sqs_world(request.getfixturevalue("aws_env"))
    return sqlite_world(tmp_path)


@pytest.fixture
def local(tmp_path) -> World:
    return sqlite_world(tmp_path)


class FlakyQueue:
    """Wraps a queue; the puts numbered in `fail` (1-based) raise, before storing or, with
    `after_storing`, once the inner put has stored (an answer lost on the way back)."""

    def __init__(self, inner: AlertQueue, fail: set[int], after_storing: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.after_storing = after_storing
        self.puts = 0
        self.lock = threading.Lock()

    def put(self, alert_id: str, body: str, group: str) -> bool:
        with self.lock:
            self.puts += 1
            n = self.puts
        if n in self.fail and not self.after_storing:
            raise ConnectionError("store unreachable (test)")
        stored = self.inner.put(alert_id, body, group)
        if n in self.fail:
            raise TimeoutError("the store's answer was lost (test)")
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
