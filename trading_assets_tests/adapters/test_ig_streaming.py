"""IGPriceStream over trading-ig's IGStreamService.

Most tests stub `LightstreamerClient` (the object trading-ig builds inside
`create_session`, the seam the wire spec names): the REST login still runs for real
against the IG fake and the stub keeps the real `Subscription` objects. The last tests
run the real Lightstreamer client over WebSocket against `FakeLightstreamer` (TLCP).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import trading_ig.stream
from lightstreamer.client import LightstreamerClient as RealLSClient

from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.adapters.ig.streaming import (
    IGPriceStream,
    PriceStream,
    StreamingError,
    Tick,
    tick_from_update,
)
from trading_assets_tests.fakes.ig import FakeIG, FakeLightstreamer

# The Lightstreamer client passes ssl=None to aiohttp, which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

EURUSD = "CS.D.EURUSD.MINI.IP"
GBPUSD = "CS.D.GBPUSD.MINI.IP"


class StubDetails:
    def __init__(self) -> None:
        self.user: str | None = None
        self.password: str | None = None

    def setUser(self, user: str) -> None:
        self.user = user

    def setPassword(self, password: str) -> None:
        self.password = password


class StubLSClient:
    """Stands in for lightstreamer.client.LightstreamerClient."""

    instances: ClassVar[list[StubLSClient]] = []
    connect_error: Exception | None = None
    status_after_connect = "CONNECTED:WS-STREAMING"
    server_error: tuple[int, str] | None = None

    def __init__(self, address: str, adapter_set: Any) -> None:
        self.address = address
        self.connectionDetails = StubDetails()
        self.listeners: list[Any] = []
        self.subscriptions: list[Any] = []
        self.status = "DISCONNECTED"
        self.disconnected = False
        StubLSClient.instances.append(self)

    def connect(self) -> None:
        if StubLSClient.connect_error is not None:
            raise StubLSClient.connect_error
        self.status = "CONNECTING"

        def later() -> None:  # the real client reports asynchronously
            for listener in self.listeners:
                if StubLSClient.server_error:
                    listener.onServerError(*StubLSClient.server_error)
                elif StubLSClient.status_after_connect:
                    listener.onStatusChange(StubLSClient.status_after_connect)

        threading.Timer(0.05, later).start()

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def getStatus(self) -> str:
        return self.status

    def subscribe(self, sub: Any) -> None:
        self.subscriptions.append(sub)

    def unsubscribe(self, sub: Any) -> None:
        self.subscriptions.remove(sub)

    def getSubscriptions(self) -> list[Any]:
        return self.subscriptions

    def disconnect(self) -> None:
        self.disconnected = True

    # test helper: deliver an update to every listener of the subscription holding `item`
    def push(self, item: str, **values: str | None) -> None:
        for sub in self.subscriptions:
            if item in sub.getItems():
                for listener in sub.getListeners():
                    listener.onItemUpdate(StubUpdate(item, values))


class StubUpdate:
    def __init__(self, item: str, values: dict[str, str | None]) -> None:
        self.item, self.values = item, values

    def getItemName(self) -> str:
        return self.item

    def getValue(self, field: str) -> str | None:
        return self.values.get(field)


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG().start()
    server.lightstreamer_endpoint = "https://apd.marketdatasystems.example"
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def stub_ls(monkeypatch: pytest.MonkeyPatch) -> type[StubLSClient]:
    StubLSClient.instances = []
    StubLSClient.connect_error = None
    StubLSClient.status_after_connect = "CONNECTED:WS-STREAMING"
    StubLSClient.server_error = None
    monkeypatch.setattr(trading_ig.stream, "LightstreamerClient", StubLSClient)
    return StubLSClient


@pytest.fixture
def stream(fake: FakeIG) -> Iterator[IGPriceStream]:
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                        timeout=2.0)
    s = IGPriceStream(conn, connect_timeout=2.0)
    yield s
    s.stop()


def test_is_a_price_stream(stream: IGPriceStream) -> None:
    assert isinstance(stream, PriceStream)


def test_connects_with_the_session_tokens_and_subscribes_tick_charts(
        stream: IGPriceStream, fake: FakeIG) -> None:
    stream.subscribe([EURUSD, GBPUSD], lambda tick: None)
    [client] = StubLSClient.instances
    assert client.address == fake.lightstreamer_endpoint
    assert client.connectionDetails.user == fake.account_id
    assert client.connectionDetails.password.startswith("CST-cst-")
    assert "|XST-xst-" in client.connectionDetails.password
    [sub] = client.subscriptions
    assert sub.getMode() == "DISTINCT"
    assert sub.getItems() == [f"CHART:{EURUSD}:TICK", f"CHART:{GBPUSD}:TICK"]
    assert {"BID", "OFR", "UTM"} <= set(sub.getFields())


def test_ticks_arrive_as_epic_utc_time_bid_offer(stream: IGPriceStream) -> None:
    got: list[Tick] = []
    stream.subscribe([EURUSD], got.append)
    client = StubLSClient.instances[0]
    client.push(f"CHART:{EURUSD}:TICK", BID="1.08501", OFR="1.08512", UTM="1719824400123")
    client.push(f"CHART:{EURUSD}:TICK", BID="1.08502", OFR="#", UTM="1719824401000")
    assert got == [
        Tick(EURUSD, datetime(2024, 7, 1, 9, 0, 0, 123000, tzinfo=UTC), 1.08501, 1.08512),
        Tick(EURUSD, datetime(2024, 7, 1, 9, 0, 1, tzinfo=UTC), 1.08502, None),
    ]
    epic, ts, bid, offer = got[0]  # usable as a plain tuple
    assert ts.tzinfo is UTC and bid < offer and epic == EURUSD


def test_a_failing_callback_does_not_stop_the_stream(stream: IGPriceStream) -> None:
    seen: list[float | None] = []

    def fragile(tick: Tick) -> None:
        seen.append(tick.bid)
        if len(seen) == 1:
            raise RuntimeError("downstream hiccup")

    stream.subscribe([EURUSD], fragile)
    client = StubLSClient.instances[0]
    client.push(f"CHART:{EURUSD}:TICK", BID="1.1", OFR="1.2", UTM="1719824400000")
    client.push(f"CHART:{EURUSD}:TICK", BID="1.3", OFR="1.4", UTM="1719824401000")
    assert seen == [1.1, 1.3]
    assert stream.callback_errors == 1


def test_connect_raising_is_an_exception_not_a_process_exit(
        stream: IGPriceStream, stub_ls: type[StubLSClient]) -> None:
    stub_ls.connect_error = RuntimeError("no route to host")
    with pytest.raises(StreamingError, match=r"sys\.exit"):
        stream.subscribe([EURUSD], lambda tick: None)


def test_server_refusal_is_reported(stream: IGPriceStream, stub_ls: type[StubLSClient]) -> None:
    stub_ls.server_error = (1, "User/password check failed")
    with pytest.raises(StreamingError, match="password check failed"):
        stream.subscribe([EURUSD], lambda tick: None)
    assert StubLSClient.instances[0].disconnected


def test_never_connecting_times_out(fake: FakeIG, stub_ls: type[StubLSClient]) -> None:
    stub_ls.status_after_connect = ""
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url)
    s = IGPriceStream(conn, connect_timeout=0.2)
    with pytest.raises(StreamingError, match="not connected"):
        s.subscribe([EURUSD], lambda tick: None)


def test_stop_disconnects_and_is_idempotent(stream: IGPriceStream) -> None:
    stream.subscribe([EURUSD], lambda tick: None)
    client = StubLSClient.instances[0]
    stream.stop()
    stream.stop()
    assert client.disconnected and client.subscriptions == []


def test_bad_login_is_not_a_process_exit(fake: FakeIG) -> None:
    conn = IGConnection(fake.username, "wrong", fake.api_key, base_url=fake.base_url)
    with pytest.raises(Exception) as info:
        IGPriceStream(conn).subscribe([EURUSD], lambda tick: None)
    assert not isinstance(info.value, SystemExit)
    assert StubLSClient.instances == []


def test_update_without_time_is_ignored() -> None:
    assert tick_from_update(StubUpdate(f"CHART:{EURUSD}:TICK", {"BID": "1.0"})) is None


# --------------------------------------------------------------- real Lightstreamer client


@pytest.fixture
def lightstreamer(fake: FakeIG) -> Iterator[FakeLightstreamer]:
    def tokens_match(user: str, password: str) -> bool:
        return user == fake.account_id and any(
            password == f"CST-{cst}|XST-{xst}" for cst, xst in fake.tokens)

    server = FakeLightstreamer(accept_password=tokens_match).start()
    fake.lightstreamer_endpoint = server.url
    try:
        yield server
    finally:
        server.stop()


def real_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trading_ig.stream, "LightstreamerClient", RealLSClient)


def test_real_client_over_tlcp_delivers_ticks(
        fake: FakeIG, lightstreamer: FakeLightstreamer, monkeypatch: pytest.MonkeyPatch) -> None:
    real_client(monkeypatch)
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url)
    stream = IGPriceStream(conn, connect_timeout=10)
    ticks: queue.Queue[Tick] = queue.Queue()
    try:
        stream.subscribe([EURUSD], ticks.put)
        assert stream.status.startswith("CONNECTED")
        assert lightstreamer.subscribed.wait(10)
        item = f"CHART:{EURUSD}:TICK"
        lightstreamer.push(item, {"BID": "1.08501", "OFR": "1.08512", "UTM": "1719824400123"})
        lightstreamer.push(item, {"BID": "1.08503", "UTM": "1719824401000"})  # OFR unchanged
        lightstreamer.push(item, {"BID": None, "UTM": "1719824402000"})  # BID null
        got = [ticks.get(timeout=10) for _ in range(3)]
    finally:
        stream.stop()
    assert got == [
        Tick(EURUSD, datetime(2024, 7, 1, 9, 0, 0, 123000, tzinfo=UTC), 1.08501, 1.08512),
        Tick(EURUSD, datetime(2024, 7, 1, 9, 0, 1, tzinfo=UTC), 1.08503, 1.08512),
        Tick(EURUSD, datetime(2024, 7, 1, 9, 0, 2, tzinfo=UTC), None, 1.08512),
    ]
    [(_name, session)] = [r for r in lightstreamer.requests if r[0] == "create_session"]
    assert session["LS_user"] == fake.account_id
    adds = [p for n, p in lightstreamer.requests if n == "control" and p.get("LS_op") == "add"]
    assert adds[0]["LS_mode"] == "DISTINCT" and adds[0]["LS_group"] == f"CHART:{EURUSD}:TICK"


def test_real_client_refused_by_the_server_raises(
        fake: FakeIG, lightstreamer: FakeLightstreamer, monkeypatch: pytest.MonkeyPatch) -> None:
    real_client(monkeypatch)
    lightstreamer.accept_password = lambda _user, _password: False
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url)
    stream = IGPriceStream(conn, connect_timeout=10)
    with pytest.raises(StreamingError, match="password check failed"):
        stream.subscribe([EURUSD], lambda tick: None)
    assert stream.service is None
