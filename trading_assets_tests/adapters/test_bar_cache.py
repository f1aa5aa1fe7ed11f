"""The bar cache in front of IG prices: the real `IGPrices` adapter (through trading-ig)
against the loopback IG fake, with its weekly historical allowance, and the two stores
(SQLite on disk, S3 Parquet on a real moto server).

What a user relies on: a week of hourly ticks fits IG's allowance, every tick's frame is
the one the uncached adapter would have returned, closed markets are asked once, the
forming bar and NaN bars are asked again, errors surface unchanged without poisoning the
cache, and the cache outlives the process (SQLite) or the ECS task (S3).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from trading_assets.adapters.aws.clients import AwsSetupError
from trading_assets.adapters.bar_cache import (
    BarStore,
    CachedMarketData,
    InnerRequest,
    S3BarStore,
    SeriesKey,
    SqliteBarStore,
    interval_bounds,
    subtract,
    union,
)
from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.adapters.ig.prices import IGPrices
from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.core import fx_hours
from trading_assets.core.bars import bar_problems
from trading_assets.core.ports import MarketData, MarketDataError, RateLimited, UnknownSymbolError
from trading_assets_tests.fakes.base import Request, Response, route
from trading_assets_tests.fakes.ig import PREFIX, FakeIG

EURUSD, GBPUSD, USDJPY = "CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP"
EPICS = [EURUSD, GBPUSD, USDJPY]
HOUR = timedelta(hours=1)
LOOKBACK = 48  # what the flow asks for: lookback 40 + 8 spare bars
# The FX week of Mon 4 - Fri 8 November 2024 (GMT and EST: no daylight saving in play).
WEEK = [b for d in range(4, 9) for b in fx_hours.bar_starts(date(2024, 11, d))]
RUN_DELAY = timedelta(seconds=30)  # the schedule's run starts a little after the bar closes


# ----------------------------------------------------------------------------- fakes and helpers


class MarketIG(FakeIG):
    """The IG fake with a market that closes: no bars in the FX weekend (and in `holes`),
    and IG charges no points for bars that do not exist. `nan_bars` answers a bar's close
    without prices (`(epic, start) -> times`), as IG does for an illiquid minute."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.holes: set[datetime] = set()
        self.nan_bars: dict[tuple[str, datetime], int] = {}

    def start(self) -> MarketIG:
        super().start()
        # Answers go out as headers then body; with Nagle on, each waits ~40 ms for the
        # client's delayed ACK. The week-long test makes ~700 requests.
        self._httpd.RequestHandlerClass.disable_nagle_algorithm = True
        return self

    def _closed(self, start: datetime) -> bool:
        return start in self.holes or fx_hours.closed_reason(start) is not None

    def _price_row(self, epic: str, start_utc: datetime, res: int) -> dict[str, Any]:
        row = super()._price_row(epic, start_utc, res)
        with self.lock:
            left = self.nan_bars.get((epic, start_utc), 0)
            if left:
                self.nan_bars[(epic, start_utc)] = left - 1
                row["closePrice"] = {"bid": None, "ask": None, "lastTraded": None}
        return row

    @route("GET", PREFIX + "/prices/(?P<epic>[^/]+)")
    def prices_v3(self, req: Request, epic: str) -> Response:
        answer = super().prices_v3(req, epic)
        if answer.status != 200:
            return answer
        rows = answer.body["prices"]
        kept = [r for r in rows
                if not self._closed(datetime.fromisoformat(r["snapshotTimeUTC"]).replace(tzinfo=UTC))]
        with self.lock:
            self.remaining_allowance += len(rows) - len(kept)
            answer.body["metadata"]["allowance"]["remainingAllowance"] = self.remaining_allowance
        answer.body["prices"] = kept
        answer.body["metadata"]["size"] = len(kept)
        return answer


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Spy:
    """A `MarketData` passing calls to `inner`, recording them, and failing on cue."""

    def __init__(self, inner: MarketData) -> None:
        self.inner, self.name = inner, inner.name
        self.calls: list[tuple[tuple[str, ...], pd.Timestamp, pd.Timestamp]] = []
        self.fail_on: dict[int, Exception] = {}
        self.raised: list[Exception] = []

    def get_bars(self, symbols: Sequence[str], start: datetime, end: datetime, interval: str) -> pd.DataFrame:
        n = len(self.calls)
        self.calls.append((tuple(symbols), pd.Timestamp(start), pd.Timestamp(end)))
        try:
            if n in self.fail_on:
                raise self.fail_on[n]
            return self.inner.get_bars(symbols, start, end, interval)
        except Exception as exc:
            self.raised.append(exc)
            raise


@pytest.fixture
def fake() -> Iterator[MarketIG]:
    server = MarketIG().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def reference() -> Iterator[MarketIG]:
    """A second IG for the uncached adapter, with an allowance it cannot run out of."""
    server = MarketIG().start()
    server.total_allowance = server.remaining_allowance = 10**8
    try:
        yield server
    finally:
        server.stop()


def ig_prices(fake: FakeIG, clock: Clock, **kw: Any) -> IGPrices:
    """The real adapter, unpaced (no page wait, no client-side limiter) for speed."""
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url, timeout=5.0,
                        sleep=lambda _s: None, non_trading_limiter=RateLimiter(10**6, 60.0))
    return IGPrices(connection=conn, page_wait=0, clock=clock, **kw)


def used(fake: FakeIG) -> int:
    return fake.total_allowance - fake.remaining_allowance


def price_requests(fake: FakeIG) -> list[Request]:
    return [r for r in fake.requests if "/prices/" in r.path]


def utc(naive_new_york: datetime) -> pd.Timestamp:
    return pd.Timestamp(naive_new_york).tz_localize(fx_hours.TZ).tz_convert("UTC")


def tick_window(last: datetime) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """(this tick's bar start, fetch from, fetch to) in UTC, as the flow's `bars` asset asks."""
    first = fx_hours.previous_bar_starts(last, LOOKBACK)[0]
    return utc(last), utc(first), utc(last) + HOUR


def stamp(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# ----------------------------------------------------------------------------- the allowance


@pytest.mark.parametrize(("store_kind", "ticks"), [("sqlite", 120), ("s3", 40)])
def test_a_week_of_hourly_ticks_costs_one_point_per_epic_per_tick(fake, reference, tmp_path, record_property,
                                                                  request, store_kind, ticks):
    """The flow's hourly ticks through the FX week (the S3 store: its first 40, for time),
    each asking for the last 48 bars of 3 epics, as the `bars` asset does."""
    clock = Clock(datetime(2024, 11, 3, tzinfo=UTC))
    if store_kind == "s3":
        aws_env = request.getfixturevalue("aws_env")
        boto3.client("s3").create_bucket(Bucket=aws_env.bucket)
        store: BarStore = _s3_store(aws_env)
    else:
        store = SqliteBarStore(tmp_path / "bars.sqlite")
    cached = CachedMarketData(ig_prices(fake, clock), store, clock=clock)
    plain = ig_prices(reference, clock)
    assert len(WEEK) == 120
    first_tick = None
    for last in WEEK[:ticks]:
        bar_start, fetch_from, fetch_to = tick_window(last)
        clock.now = (fetch_to + RUN_DELAY).to_pydatetime()
        got = cached.get_bars(EPICS, fetch_from, fetch_to, "1h")
        want = plain.get_bars(EPICS, fetch_from, fetch_to, "1h")
        pd.testing.assert_frame_equal(got, want)
        assert bar_problems(got, EPICS, last_bar_start=bar_start) == []
        assert got.groupby("symbol").size().to_dict() == dict.fromkeys(EPICS, LOOKBACK)
        first_tick = used(fake) if first_tick is None else first_tick
    with_cache, without_cache = used(fake), used(reference)
    record_property("allowance_with_cache", with_cache)
    record_property("allowance_without_cache", without_cache)
    print(f"\nIG points for {ticks} ticks x 3 epics x {LOOKBACK} bars ({store_kind}): with the cache "
          f"{with_cache} (first tick {first_tick}), without {without_cache}")
    assert first_tick == 3 * LOOKBACK  # the first tick fills the cache: 48 bars per epic
    assert with_cache - first_tick == 3 * (ticks - 1)  # then exactly the bar that has just closed
    assert len(price_requests(fake)) == 3 * ticks  # one request per epic per tick, no more
    # Uncached, each tick pays its 48 bars and (IG reads `to` inclusively) the next one;
    # a week of it is far past the weekly 10,000 (Friday's last next bar is in the weekend).
    assert without_cache == ticks * 3 * (LOOKBACK + 1) - (3 if ticks == 120 else 0)
    if ticks == 120:
        assert with_cache == 501 < fake.total_allowance < without_cache == 17_637


def test_epics_missing_the_same_spans_are_asked_in_one_call(fake, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    spy = Spy(ig_prices(fake, clock))
    cached = CachedMarketData(spy, SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    cached.get_bars([EURUSD, GBPUSD], start, end, "1h")
    assert [c[0] for c in spy.calls] == [(EURUSD, GBPUSD)]
    # A new epic needs the whole window, the two known ones only the new hour: two calls.
    clock.now += HOUR
    out = cached.get_bars([EURUSD, GBPUSD, USDJPY], start, end + HOUR, "1h")
    assert spy.calls[1:] == [((EURUSD, GBPUSD), end, end + HOUR - pd.Timedelta(1, "us")),
                             ((USDJPY,), start, end + HOUR - pd.Timedelta(1, "us"))]
    assert out.groupby("symbol").size().to_dict() == dict.fromkeys(EPICS, 13)
    assert cached.name == "ig" and isinstance(cached, MarketData)


# ----------------------------------------------------------------------------- closed markets


def test_a_weekend_is_asked_for_once(fake, tmp_path):
    clock = Clock(datetime(2024, 11, 1, tzinfo=UTC))
    cached = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    friday_last = datetime(2024, 11, 1, 16)  # New York: the week's last bar, 20:00-21:00 UTC (EDT)
    _, fetch_from, fetch_to = tick_window(friday_last)
    clock.now = (fetch_to + RUN_DELAY).to_pydatetime()
    cached.get_bars(EPICS, fetch_from, fetch_to, "1h")
    sunday_first = datetime(2024, 11, 3, 17)  # New York (EST by then): 22:00 UTC
    bar_start, fetch_from, fetch_to = tick_window(sunday_first)
    clock.now = (fetch_to + RUN_DELAY).to_pydatetime()
    before, asked = used(fake), len(cached.requests)
    out = cached.get_bars(EPICS, fetch_from, fetch_to, "1h")
    # One call across the whole weekend, for all three epics; IG had one bar each.
    [weekend] = cached.requests[asked:]
    assert weekend.symbols == tuple(EPICS)
    assert (weekend.start, weekend.end) == (stamp("2024-11-01 21:00"), fetch_to - pd.Timedelta(1, "us"))
    assert used(fake) - before == 3
    assert bar_problems(out, EPICS, last_bar_start=bar_start) == []
    # Asking again, or for the next hour, never goes back into the weekend.
    cached.get_bars(EPICS, fetch_from, fetch_to, "1h")
    assert len(cached.requests) == asked + 1
    clock.now += HOUR
    cached.get_bars(EPICS, fetch_from + HOUR, fetch_to + HOUR, "1h")
    assert [r.start for r in cached.requests[asked + 1:]] == [stamp("2024-11-03 23:00")]


def test_an_hour_without_a_bar_is_not_asked_again(fake, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    fake.holes.add(datetime(2024, 11, 6, 5, tzinfo=UTC))
    cached = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    first = cached.get_bars([EURUSD], start, end, "1h")
    assert len(first) == 11 and stamp("2024-11-06 05:00") not in first.index
    asked = len(price_requests(fake))
    again = cached.get_bars([EURUSD], start, end, "1h")
    pd.testing.assert_frame_equal(again, first)
    assert len(price_requests(fake)) == asked


def test_a_bar_absent_just_after_its_close_is_asked_again(fake, tmp_path):
    """IG may publish the bar that has just closed a little late: its absence is not
    trusted until `settle` has passed, so the cache cannot keep a hole for good."""
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    late = datetime(2024, 11, 6, 11, tzinfo=UTC)
    fake.holes.add(late)
    cached = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    assert len(cached.get_bars([EURUSD], start, end, "1h")) == 11
    fake.holes.clear()
    again = cached.get_bars([EURUSD], start, end, "1h")
    assert cached.requests[-1].start == stamp("2024-11-06 11:00") and len(again) == 12
    assert len(cached.get_bars([EURUSD], start, end, "1h")) == 12 and len(cached.requests) == 2


# ----------------------------------------------------------------------------- forming and NaN bars


def test_the_forming_bar_is_asked_again_until_it_has_closed(fake, reference, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 30, tzinfo=UTC))  # the 12:00 bar is half-way
    cached = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    plain = ig_prices(reference, clock)
    start, end = stamp("2024-11-06 07:00"), stamp("2024-11-06 13:00")
    first = cached.get_bars([EURUSD], start, end, "1h")
    pd.testing.assert_frame_equal(first, plain.get_bars([EURUSD], start, end, "1h"))
    assert first.index[-1] == stamp("2024-11-06 12:00")
    second = cached.get_bars([EURUSD], start, end, "1h")
    pd.testing.assert_frame_equal(second, first)
    assert cached.requests[-1].start <= stamp("2024-11-06 12:00") < cached.requests[-1].end
    assert used(fake) == 6 + 1  # the forming bar was paid for again, nothing else
    clock.now = datetime(2024, 11, 6, 13, 0, 30, tzinfo=UTC)  # closed now: stored this time
    cached.get_bars([EURUSD], start, end, "1h")
    asked = len(cached.requests)
    pd.testing.assert_frame_equal(cached.get_bars([EURUSD], start, end, "1h"), first)
    assert len(cached.requests) == asked == 3


def test_a_bar_with_nan_prices_is_fetched_again(fake, reference, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    bad = datetime(2024, 11, 6, 9, tzinfo=UTC)
    fake.nan_bars[(EURUSD, bad)] = 1
    cached = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    start, end = stamp("2024-11-06 06:00"), stamp("2024-11-06 12:00")
    first = cached.get_bars([EURUSD, GBPUSD], start, end, "1h")
    assert np.isnan(first.loc[first["symbol"] == EURUSD, "close"].loc[pd.Timestamp(bad)])
    second = cached.get_bars([EURUSD, GBPUSD], start, end, "1h")
    # Only that bar, only for that epic, is asked again; IG's answer is good this time.
    assert cached.requests[1:] == [InnerRequest((EURUSD,), pd.Timestamp(bad),
                                                pd.Timestamp(bad) + HOUR - pd.Timedelta(1, "us"))]
    pd.testing.assert_frame_equal(second, ig_prices(reference, clock).get_bars([EURUSD, GBPUSD], start, end, "1h"))
    cached.get_bars([EURUSD, GBPUSD], start, end, "1h")
    assert len(cached.requests) == 2


# ----------------------------------------------------------------------------- errors


def test_allowance_used_up_passes_through_and_nothing_is_cached(fake, reference, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    spy = Spy(ig_prices(fake, clock, page_size=5))
    store = SqliteBarStore(tmp_path / "bars.sqlite")
    cached = CachedMarketData(spy, store, clock=clock)
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    fake.remaining_allowance = 7  # the first page (5 points) fits, the second does not
    with pytest.raises(RateLimited) as caught:
        cached.get_bars([EURUSD], start, end, "1h")
    assert caught.value is spy.raised[-1]  # unchanged: the adapter's own exception
    held = store.read(SeriesKey("ig", EURUSD, "1h"), 0, 2**62)
    assert held.covered == [] and len(held.bars) == 0  # the first page is not kept half-done
    fake.remaining_allowance = fake.total_allowance
    spy.inner = ig_prices(fake, clock, page_size=5)  # a fresh adapter: the old one remembers "used up"
    pd.testing.assert_frame_equal(cached.get_bars([EURUSD], start, end, "1h"),
                                  ig_prices(reference, clock).get_bars([EURUSD], start, end, "1h"))


@pytest.mark.parametrize("error", ["unknown epic", "server error"])
def test_provider_errors_pass_through_and_the_cache_stays_consistent(fake, reference, tmp_path, error):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    store = SqliteBarStore(tmp_path / "bars.sqlite")
    cached = CachedMarketData(ig_prices(fake, clock), store, clock=clock)
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    if error == "unknown epic":
        fake.unknown_epics.add(USDJPY)
        with pytest.raises(UnknownSymbolError, match=USDJPY):
            cached.get_bars(EPICS, start, end, "1h")
    else:
        fake.fault_error(500, "error.fake.server-problem", path=r"/prices/")
        with pytest.raises(MarketDataError, match="IG prices for"):
            cached.get_bars(EPICS, start, end, "1h")
    # Nothing of the failed call is stored; the next call is whole and right.
    for epic in EPICS:
        assert store.read(SeriesKey("ig", epic, "1h"), 0, 2**62).covered == []
    fake.unknown_epics.clear()
    pd.testing.assert_frame_equal(cached.get_bars(EPICS, start, end, "1h"),
                                  ig_prices(reference, clock).get_bars(EPICS, start, end, "1h"))


def test_a_failure_after_an_answered_span_keeps_that_span_only(fake, reference, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 20, 0, 30, tzinfo=UTC))
    spy = Spy(ig_prices(fake, clock))
    cached = CachedMarketData(spy, SqliteBarStore(tmp_path / "bars.sqlite"), clock=clock)
    cached.get_bars([EURUSD], stamp("2024-11-06 08:00"), stamp("2024-11-06 12:00"), "1h")
    # Two spans are missing around the held one: the first is answered, the second fails.
    spy.fail_on[2] = RateLimited("IG weekly historical-price allowance used up", broker="ig")
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 20:00")
    with pytest.raises(RateLimited) as caught:
        cached.get_bars([EURUSD], start, end, "1h")
    assert caught.value is spy.fail_on[2]
    spy.fail_on.clear()
    out = cached.get_bars([EURUSD], start, end, "1h")
    assert spy.calls[-1][1:] == (stamp("2024-11-06 12:00"), stamp("2024-11-06 20:00") - pd.Timedelta(1, "us"))
    pd.testing.assert_frame_equal(out, ig_prices(reference, clock).get_bars([EURUSD], start, end, "1h"))


# ----------------------------------------------------------------------------- stores


_READ_IN_A_NEW_PROCESS = """
import json, sys
from trading_assets.adapters.bar_cache import SeriesKey, SqliteBarStore
held = SqliteBarStore(sys.argv[1]).read(SeriesKey("ig", sys.argv[2], "1h"), 0, 2**62)
print(json.dumps({"bars": len(held.bars), "covered": held.covered, "unit": held.unit,
                  "first_close": float(held.bars["close"].iloc[0])}))
"""


def test_the_sqlite_store_survives_a_new_process(fake, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    path = tmp_path / "bars.sqlite"
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    first = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(path), clock=clock).get_bars(
        EPICS, start, end, "1h")
    seen = json.loads(subprocess.run([sys.executable, "-c", _READ_IN_A_NEW_PROCESS, str(path), EURUSD],
                                     check=True, capture_output=True, text=True).stdout)
    assert seen["bars"] == 12 and seen["unit"] == "us"
    assert seen["covered"] == [[start.value, end.value]]
    assert seen["first_close"] == pytest.approx(FakeIG.bar_for(EURUSD, start.to_pydatetime(), 3600)["close"])
    # A new adapter and cache on the same file ask IG nothing for what it holds.
    asked = len(price_requests(fake))
    again = CachedMarketData(ig_prices(fake, clock), SqliteBarStore(path), clock=clock).get_bars(
        EPICS, start, end, "1h")
    pd.testing.assert_frame_equal(again, first)
    assert len(price_requests(fake)) == asked


def _s3_store(aws_env, prefix: str = "assets/bar-cache") -> S3BarStore:
    return S3BarStore(aws_env.bucket, prefix, aws_env.region)


@pytest.fixture
def bucket(aws_env) -> str:
    boto3.client("s3").create_bucket(Bucket=aws_env.bucket)
    return aws_env.bucket


def test_the_s3_store_round_trips_through_moto(fake, reference, aws_env, bucket):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    start, end = stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00")
    first = CachedMarketData(ig_prices(fake, clock), _s3_store(aws_env), clock=clock).get_bars(
        EPICS, start, end, "1h")
    keys = sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"assets/bar-cache/ig/1h/{epic}.parquet" for epic in sorted(EPICS)]
    # A new task (new store, new adapter) reads it back and asks IG nothing.
    asked = len(price_requests(fake))
    again = CachedMarketData(ig_prices(fake, clock), _s3_store(aws_env), clock=clock).get_bars(
        EPICS, start, end, "1h")
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(again, ig_prices(reference, clock).get_bars(EPICS, start, end, "1h"))
    assert len(price_requests(fake)) == asked
    # The object is plain Parquet: bars with a UTC timestamp column, spans in its metadata.
    body = boto3.client("s3").get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    assert json.loads(table.schema.metadata[b"trading_assets.bar_cache"])["covered"] == [[start.value, end.value]]


def _bars(starts: Sequence[str], close: float) -> pd.DataFrame:
    index = pd.DatetimeIndex([stamp(s) for s in starts], name="timestamp").as_unit("us")
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index)


def _span(a: str, b: str) -> tuple[int, int]:
    return stamp(a).value, stamp(b).value


@pytest.mark.parametrize("object_exists", [False, True], ids=["new-object", "existing-object"])
def test_two_s3_writers_never_lose_each_others_bars(aws_env, bucket, object_exists):
    key = SeriesKey("ig", EURUSD, "1h")
    if object_exists:
        _s3_store(aws_env).merge(key, _bars(["2024-11-06 00:00"], 1.0), [_span("2024-11-06 00:00", "2024-11-06 01:00")])
    a, b = _s3_store(aws_env), _s3_store(aws_env)
    a.read(key, 0, 2**62)
    b.read(key, 0, 2**62)  # both now hold the same version (or both saw no object)
    b.merge(key, _bars(["2024-11-06 02:00", "2024-11-06 03:00"], 2.0), [_span("2024-11-06 02:00", "2024-11-06 04:00")])
    # a's conditional put is refused (b changed the object); a merges again onto b's bars.
    a.merge(key, _bars(["2024-11-06 01:00", "2024-11-06 03:00"], 3.0), [_span("2024-11-06 01:00", "2024-11-06 02:00"),
                                                                        _span("2024-11-06 03:00", "2024-11-06 04:00")])
    held = _s3_store(aws_env).read(key, 0, 2**62)
    expected_starts = ["2024-11-06 01:00", "2024-11-06 02:00", "2024-11-06 03:00"]
    if object_exists:
        expected_starts.insert(0, "2024-11-06 00:00")
    assert list(held.bars.index) == [stamp(s) for s in expected_starts]
    assert held.bars.loc[stamp("2024-11-06 02:00"), "close"] == 2.0
    assert held.bars.loc[stamp("2024-11-06 03:00"), "close"] == 3.0  # same bar: the last to commit wins
    assert held.covered == [_span("2024-11-06 00:00" if object_exists else "2024-11-06 01:00", "2024-11-06 04:00")]


def test_many_concurrent_s3_writers_keep_every_bar(aws_env, bucket):
    key = SeriesKey("ig", GBPUSD, "1h")
    hours = [f"2024-11-06 {h:02d}:00" for h in range(12)]
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            store = S3BarStore(aws_env.bucket, "assets/bar-cache", aws_env.region, sleep=lambda _s: None,
                               max_attempts=30)
            store.merge(key, _bars([hours[i]], float(i)), [(stamp(hours[i]).value, (stamp(hours[i]) + HOUR).value)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(hours))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    held = _s3_store(aws_env).read(key, 0, 2**62)
    assert list(held.bars.index) == [stamp(h) for h in hours]
    assert held.bars["close"].tolist() == [float(i) for i in range(12)]
    assert held.covered == [_span("2024-11-06 00:00", "2024-11-06 12:00")]


def test_a_missing_bucket_is_a_setup_error_before_any_ig_call(fake, aws_env):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    cached = CachedMarketData(ig_prices(fake, clock), _s3_store(aws_env), clock=clock)
    with pytest.raises(AwsSetupError, match=f"S3 bucket {aws_env.bucket} does not exist"):
        cached.get_bars(EPICS, stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00"), "1h")
    assert price_requests(fake) == []


@pytest.mark.parametrize("make_store", ["sqlite", "s3"])
def test_both_stores_are_bar_stores(aws_env, bucket, tmp_path, make_store):
    store = SqliteBarStore(tmp_path / "b.sqlite") if make_store == "sqlite" else _s3_store(aws_env)
    assert isinstance(store, BarStore)
    key = SeriesKey("ig", "A/B C", "1h")  # any symbol, even one with a slash
    store.merge(key, _bars(["2024-11-06 00:00", "2024-11-06 01:00"], 1.5),
                [_span("2024-11-06 00:00", "2024-11-06 02:00")])
    store.merge(key, _bars(["2024-11-06 05:00"], 2.5), [_span("2024-11-06 05:00", "2024-11-06 06:00"),
                                                        _span("2024-11-06 02:00", "2024-11-06 03:00")])
    held = store.read(key, stamp("2024-11-06 01:00").value, stamp("2024-11-06 05:00").value)
    assert list(held.bars.index) == [stamp("2024-11-06 01:00")] and held.unit == "us"
    assert str(held.bars.index.dtype) == "datetime64[us, UTC]"
    assert held.covered == [_span("2024-11-06 00:00", "2024-11-06 03:00")]


# ----------------------------------------------------------------------------- small parts and wiring


def test_spans_and_intervals():
    assert union([(5, 7), (0, 2), (2, 3), (6, 9)]) == [(0, 3), (5, 9)]
    assert subtract((0, 10), [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert subtract((0, 10), []) == [(0, 10)] and subtract((0, 10), [(0, 10)]) == []
    assert interval_bounds("1h") == (pd.Timedelta(hours=1),) * 2
    assert interval_bounds("15min") == (pd.Timedelta(minutes=15),) * 2
    assert interval_bounds("1d") == (pd.Timedelta(hours=23), pd.Timedelta(hours=25))
    assert interval_bounds("fortnightly") is None


def test_an_interval_the_cache_does_not_understand_is_passed_through(fake, tmp_path):
    clock = Clock(datetime(2024, 11, 6, 12, 0, 30, tzinfo=UTC))
    spy = Spy(ig_prices(fake, clock))
    cached = CachedMarketData(spy, SqliteBarStore(tmp_path / "b.sqlite"), clock=clock)
    with pytest.raises(ValueError, match="IG has no"):
        cached.get_bars([EURUSD], stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00"), "fortnightly")
    assert spy.calls == [((EURUSD,), stamp("2024-11-06 00:00"), stamp("2024-11-06 12:00"))]


def test_fx_prices_in_aws_mode_go_through_the_cache(aws_env, monkeypatch, tmp_path):
    from trading_assets.resources.market_data import (
        CachedMarketDataResource,
        IGPricesResource,
        ReplayMarketDataResource,
        fx_prices_resource,
    )

    for name, value in {"IG_USERNAME": "u", "IG_PASSWORD": "p", "IG_API_KEY": "k",
                        "TRADING_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TRADING_BAR_CACHE", raising=False)
    resource = fx_prices_resource("aws")
    assert isinstance(resource, CachedMarketDataResource) and isinstance(resource.inner, IGPricesResource)
    prices = resource.get()
    assert isinstance(prices, CachedMarketData) and isinstance(prices.inner, IGPrices) and prices.name == "ig"
    assert isinstance(prices.store, S3BarStore)
    assert (prices.store.bucket, prices.store.prefix) == (aws_env.bucket, "assets/bar-cache")
    monkeypatch.setenv("TRADING_BAR_CACHE", "sqlite")
    store = fx_prices_resource("aws").get().store
    assert isinstance(store, SqliteBarStore) and store.path == tmp_path / "bar_cache.sqlite"
    monkeypatch.setenv("TRADING_BAR_CACHE", "off")
    assert isinstance(fx_prices_resource("aws"), IGPricesResource)
    monkeypatch.setenv("TRADING_BAR_CACHE", "memcached")
    with pytest.raises(ValueError, match="TRADING_BAR_CACHE='memcached'"):
        fx_prices_resource("aws")
    assert isinstance(fx_prices_resource("local"), ReplayMarketDataResource)  # replay: never cached
