"""A bar cache in front of any `MarketData`: ask the provider only for bars we do not have.

Why: IG allows about 10,000 historical price points per account per *week*. The IG
Fibonacci flow runs every hour of the FX week (~120 ticks) and each tick wants the last
~48 hourly bars of every market; fetched afresh that is 48 x markets x 120 points a week,
past the allowance by the first Tuesday. Almost all of those bars were already fetched
an hour earlier. `CachedMarketData` remembers them, so a tick costs about one point per
market (the bar that has just closed).

What it remembers, per (provider name, symbol, interval):

- the **bars** it has seen *closed* (the bar's end, start + the longest the interval can
  last, is not after "now", an injectable clock) and with finite prices. The forming bar
  is never stored, so it is asked for again until it has closed; a bar with NaN prices is
  not stored either, so a later answer can fix it;
- the **spans it has asked for** and may trust, as half-open [lo, hi) ranges of bar
  starts in integer nanoseconds UTC. A span the market was closed in (a weekend, an hour
  without a bar) is therefore not asked again. The trailing empty part of an answer (no
  bar after the last one returned) is trusted only once it is `settle` older than its
  close, so a bar the provider publishes a few seconds late is asked for again next tick
  rather than lost for good.

On `get_bars` it reads what it holds for [start, end), works out each symbol's missing
spans, asks the inner provider once per distinct set of missing spans (symbols whose
missing spans coincide go in one call) and once per span, stores what it may, and returns
cached and fresh bars as one frame: the same frame the inner provider returns for the same
request (core.bars schema, tz-aware UTC index in the inner provider's unit, sorted,
exactly [start, end)).

A missing span [a, b) with a whole-second `b` is asked as [a, b - 1 µs): the same bars
(bar starts are whole seconds), but IG reads `to` inclusively and would otherwise charge
a point for the bar starting at `b`, which the next span or the next tick asks for anyway.

Errors of the inner provider (`RateLimited`, `MarketDataError`, `UnknownSymbolError`, ...)
pass through unchanged. A span is stored only after the inner call for it has succeeded,
so a failed call leaves nothing behind (spans answered before it stay stored: they are
right). Store errors are raised too, explained when they are setup problems (a missing
bucket): a cache that silently stopped caching would spend the week's allowance in a day.

Two stores behind `BarStore`: `SqliteBarStore` (local disk, one IMMEDIATE transaction per
merge) and `S3BarStore` (aws mode, where ECS tasks have no persistent disk: one Parquet
object per series, written with a conditional put and merged again on a conflict). Two
writers racing on one series each merge into what the other wrote (union of bars and
spans; for the same bar start the later writer's values win), so no bar is lost.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import numpy as np
import pandas as pd

from trading_assets.core.bars import PRICE_COLUMNS, empty_bars, normalise_bars
from trading_assets.core.ports import MarketData

logger = logging.getLogger(__name__)

Span = tuple[int, int]  # [lo, hi) of bar starts, integer nanoseconds since the epoch, UTC

VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")
SECOND_NS = 1_000_000_000
MICROSECOND_NS = 1_000
DEFAULT_SETTLE = pd.Timedelta(minutes=10)

# ----------------------------------------------------------------------------- intervals

_UNIT_BOUNDS = {  # unit -> (shortest, longest) a bar of one such unit lasts
    "s": (pd.Timedelta(seconds=1),) * 2,
    "min": (pd.Timedelta(minutes=1),) * 2,
    "h": (pd.Timedelta(hours=1),) * 2,
    "d": (pd.Timedelta(hours=23), pd.Timedelta(hours=25)),  # days anchored to a zone with DST
    "w": (pd.Timedelta(days=7) - pd.Timedelta(hours=1), pd.Timedelta(days=7) + pd.Timedelta(hours=1)),
    "mo": (pd.Timedelta(days=28), pd.Timedelta(days=31) + pd.Timedelta(hours=1)),
}
_UNIT_NAMES = {
    "s": "s", "sec": "s", "second": "s", "seconds": "s",
    "min": "min", "mins": "min", "minute": "min", "minutes": "min", "m": "min", "t": "min",
    "h": "h", "hr": "h", "hour": "h", "hours": "h",
    "d": "d", "day": "d", "days": "d",
    "w": "w", "wk": "w", "week": "w", "weeks": "w",
    "mo": "mo", "mon": "mo", "month": "mo", "months": "mo", "me": "mo",
}
_INTERVAL_RE = re.compile(r"^(\d*)\s*([a-z]+)$")


def interval_bounds(interval: str) -> tuple[pd.Timedelta, pd.Timedelta] | None:
    """(shortest, longest) one bar of `interval` can last ("1h", "5min", "1d", "1mo", ...),
    or None for a name this cache does not understand (then it passes the request through).

    The longest decides when a bar is closed (never too early); the shortest how soon the
    next bar can start after one that was seen (bars of one interval never overlap)."""
    match = _INTERVAL_RE.match(interval.strip().lower())
    if not match or match.group(2) not in _UNIT_NAMES:
        return None
    count = int(match.group(1) or 1)
    if count < 1:
        return None
    shortest, longest = _UNIT_BOUNDS[_UNIT_NAMES[match.group(2)]]
    return shortest * count, longest * count


# ----------------------------------------------------------------------------- spans


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint, non-adjacent spans covering exactly what `spans` cover."""
    out: list[list[int]] = []
    for lo, hi in sorted((int(a), int(b)) for a, b in spans if b > a):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def subtract(span: Span, covered: Iterable[Span]) -> list[Span]:
    """The parts of `span` that `covered` does not cover, in order."""
    lo, hi = span
    out: list[Span] = []
    cursor = lo
    for a, b in union(covered):
        if b <= cursor or a >= hi:
            continue
        if a > cursor:
            out.append((cursor, a))
        cursor = max(cursor, b)
        if cursor >= hi:
            break
    if cursor < hi:
        out.append((cursor, hi))
    return out


def _ns(ts: datetime | pd.Timestamp) -> int:
    return int(pd.Timestamp(ts).value)


def _stamp(ns: int) -> pd.Timestamp:
    return pd.Timestamp(ns, unit="ns", tz="UTC")


def _utc(ts: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        raise ValueError(f"start/end must be tz-aware, got naive {ts!r}")
    return stamp.tz_convert("UTC")


def _floor_second(ns: int) -> int:
    return (ns // SECOND_NS) * SECOND_NS


# ----------------------------------------------------------------------------- stores


@dataclass(frozen=True)
class SeriesKey:
    """One cached series: a provider's bars of one symbol at one interval."""

    provider: str
    symbol: str
    interval: str


@dataclass
class CachedSeries:
    """What a store holds of one series within a window: `bars` (index: bar start,
    tz-aware UTC, in `unit`; columns open, high, low, close, volume) and the `covered`
    spans that overlap the window."""

    bars: pd.DataFrame
    covered: list[Span] = field(default_factory=list)
    unit: str | None = None  # the index unit the provider answered in (None: nothing stored yet)


def empty_series_bars(unit: str = "ns") -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in VALUE_COLUMNS})
    frame.index = pd.DatetimeIndex([], tz="UTC", name="timestamp").as_unit(unit)
    return frame


def _series_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """A provider frame's rows of one symbol as series bars: sorted, unique, floats."""
    out = frame.loc[:, list(VALUE_COLUMNS)].astype("float64")
    out.index = pd.DatetimeIndex(out.index).tz_convert("UTC").rename("timestamp")
    out = out[~out.index.duplicated(keep="last")]
    return out.sort_index()


def _combine(old: pd.DataFrame, new: pd.DataFrame, unit: str) -> pd.DataFrame:
    """`old` and `new` bars in one series (`new` wins on the same bar start), in `unit`."""
    parts = [f.set_axis(pd.DatetimeIndex(f.index).as_unit(unit), axis=0) for f in (old, new) if len(f)]
    if not parts:
        return empty_series_bars(unit)
    both = pd.concat(parts)
    both = both[~both.index.duplicated(keep="last")]
    return both.sort_index().rename_axis("timestamp")


@runtime_checkable
class BarStore(Protocol):
    """Where `CachedMarketData` keeps its bars and covered spans. `merge` is atomic per
    series and a union: it never drops a bar or a span another writer stored."""

    def read(self, key: SeriesKey, lo: int, hi: int) -> CachedSeries:
        """The stored bars starting in [lo, hi) and the covered spans overlapping it."""
        ...

    def merge(self, key: SeriesKey, bars: pd.DataFrame, covered: Sequence[Span]) -> None:
        """Add `bars` (same shape as `CachedSeries.bars`; same start replaces) and `covered`."""
        ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bar_cache_bars (
    provider TEXT NOT NULL, symbol TEXT NOT NULL, interval TEXT NOT NULL, ts INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
    PRIMARY KEY (provider, symbol, interval, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bar_cache_spans (
    provider TEXT NOT NULL, symbol TEXT NOT NULL, interval TEXT NOT NULL, lo INTEGER NOT NULL,
    hi INTEGER NOT NULL, PRIMARY KEY (provider, symbol, interval, lo)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bar_cache_series (
    provider TEXT NOT NULL, symbol TEXT NOT NULL, interval TEXT NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (provider, symbol, interval)) WITHOUT ROWID;
"""


class SqliteBarStore:
    """Bars and covered spans in a SQLite file (the project's WAL + busy-timeout helpers):
    for local runs and any machine with a persistent disk. Bar starts are integer
    nanoseconds UTC, prices REAL (float64, exact round trip)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _ready(self) -> None:
        from trading_assets.adapters.sqlite.util import ensure_schema

        ensure_schema(self.path, _SQLITE_SCHEMA)

    def read(self, key: SeriesKey, lo: int, hi: int) -> CachedSeries:
        from trading_assets.adapters.sqlite.util import reading

        self._ready()
        ident = (key.provider, key.symbol, key.interval)
        with reading(self.path) as conn:
            rows = conn.execute(
                "SELECT ts, open, high, low, close, volume FROM bar_cache_bars WHERE provider = ? AND symbol = ? "
                "AND interval = ? AND ts >= ? AND ts < ? ORDER BY ts", (*ident, lo, hi)).fetchall()
            spans = conn.execute(
                "SELECT lo, hi FROM bar_cache_spans WHERE provider = ? AND symbol = ? AND interval = ? "
                "AND hi > ? AND lo < ? ORDER BY lo", (*ident, lo, hi)).fetchall()
            unit_row = conn.execute(
                "SELECT unit FROM bar_cache_series WHERE provider = ? AND symbol = ? AND interval = ?",
                ident).fetchone()
        unit = unit_row["unit"] if unit_row else None
        bars = empty_series_bars(unit or "ns")
        if rows:
            values = np.array([tuple(r)[1:] for r in rows], dtype="float64")
            index = pd.DatetimeIndex(pd.to_datetime([r["ts"] for r in rows], unit="ns", utc=True),
                                     name="timestamp").as_unit(unit or "ns")
            bars = pd.DataFrame(values, index=index, columns=list(VALUE_COLUMNS))
        return CachedSeries(bars=bars, covered=[(int(r["lo"]), int(r["hi"])) for r in spans], unit=unit)

    def merge(self, key: SeriesKey, bars: pd.DataFrame, covered: Sequence[Span]) -> None:
        from trading_assets.adapters.sqlite.util import transaction

        self._ready()
        ident = (key.provider, key.symbol, key.interval)
        index = pd.DatetimeIndex(bars.index)
        rows = [(*ident, int(ts), *map(float, vals))
                for ts, vals in zip(index.as_unit("ns").asi8, bars.loc[:, list(VALUE_COLUMNS)].to_numpy(),
                                    strict=True)]
        with transaction(self.path) as conn:
            if rows:
                conn.executemany(
                    "INSERT INTO bar_cache_bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (provider, symbol, interval, ts) DO UPDATE SET open = excluded.open, "
                    "high = excluded.high, low = excluded.low, close = excluded.close, volume = excluded.volume",
                    rows)
                conn.execute("INSERT INTO bar_cache_series VALUES (?, ?, ?, ?) ON CONFLICT "
                             "(provider, symbol, interval) DO UPDATE SET unit = excluded.unit",
                             (*ident, index.unit))
            if covered:
                existing = conn.execute("SELECT lo, hi FROM bar_cache_spans WHERE provider = ? AND symbol = ? "
                                        "AND interval = ?", ident).fetchall()
                merged = union([*((int(r["lo"]), int(r["hi"])) for r in existing), *covered])
                conn.execute("DELETE FROM bar_cache_spans WHERE provider = ? AND symbol = ? AND interval = ?",
                             ident)
                conn.executemany("INSERT INTO bar_cache_spans VALUES (?, ?, ?, ?, ?)",
                                 [(*ident, lo, hi) for lo, hi in merged])


class BarCacheConflict(RuntimeError):
    """A series kept changing under us: the conditional S3 write lost every retry."""


_S3_META_KEY = b"trading_assets.bar_cache"
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


class S3BarStore:
    """One Parquet object per series, `s3://bucket/prefix/<provider>/<interval>/<symbol>.parquet`
    (each part URL-quoted), for aws mode: ECS tasks have no persistent disk.

    The object holds the bars (a `timestamp` column in the provider's unit, UTC, and
    open..volume) and, in the Parquet schema metadata, the covered spans, so bars and
    spans change together in one object. A merge is read, union, then a conditional put
    (`IfMatch` the ETag read, or `IfNoneMatch: *` for a new object); when another writer
    got there first S3 answers 412 (409 while a conflicting write is in flight) and the
    merge starts again from what that writer stored. So two writers never lose each
    other's bars; for the same bar start the writer that commits last wins.

    Clients come from `adapters.aws.clients` (bounded retries; `AWS_ENDPOINT_URL` points
    them at moto offline)."""

    def __init__(self, bucket: str, prefix: str, region: str, *, max_attempts: int = 8,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.max_attempts = max_attempts
        self.sleep = sleep
        self._client: Any = None
        self._seen: dict[SeriesKey, tuple[str | None, pd.DataFrame, list[Span], str | None]] = {}

    def object_key(self, key: SeriesKey) -> str:
        parts = [quote(p, safe="") for p in (key.provider, key.interval, key.symbol)]
        name = "/".join(parts) + ".parquet"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _s3(self) -> Any:
        if self._client is None:
            from trading_assets.adapters.aws.clients import client

            self._client = client("s3", self.region)
        return self._client

    def _raise_explained(self, exc: Exception) -> None:
        from trading_assets.adapters.aws.clients import explain

        setup = explain(exc, f"S3 bucket {self.bucket}")
        if setup is not None:
            raise setup from exc

    def _load(self, key: SeriesKey) -> tuple[str | None, pd.DataFrame, list[Span], str | None]:
        """(ETag or None when absent, all bars, all covered spans, unit) of one series."""
        import pyarrow.parquet as pq

        from trading_assets.adapters.aws.clients import error_code

        try:
            answer = self._s3().get_object(Bucket=self.bucket, Key=self.object_key(key))
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                loaded: tuple[str | None, pd.DataFrame, list[Span], str | None] = (None, empty_series_bars(), [], None)
                self._seen[key] = loaded
                return loaded
            self._raise_explained(exc)
            raise
        table = pq.read_table(io.BytesIO(answer["Body"].read()))
        meta = json.loads((table.schema.metadata or {}).get(_S3_META_KEY, b"{}"))
        frame = table.to_pandas().set_index("timestamp")
        index = pd.DatetimeIndex(frame.index)
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        frame.index = index.rename("timestamp")
        bars = frame.loc[:, list(VALUE_COLUMNS)].astype("float64")
        loaded = (answer["ETag"], bars, [(int(a), int(b)) for a, b in meta.get("covered", [])],
                  meta.get("unit") or index.unit)
        self._seen[key] = loaded
        return loaded

    def read(self, key: SeriesKey, lo: int, hi: int) -> CachedSeries:
        _etag, bars, covered, unit = self._load(key)
        starts = pd.DatetimeIndex(bars.index).as_unit("ns").asi8
        window = bars[(starts >= lo) & (starts < hi)]
        return CachedSeries(bars=window, covered=[s for s in covered if s[1] > lo and s[0] < hi], unit=unit)

    def _body(self, key: SeriesKey, bars: pd.DataFrame, covered: list[Span], unit: str) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = bars.reset_index()
        table = pa.Table.from_pandas(flat, preserve_index=False)
        meta = {"version": 1, "provider": key.provider, "symbol": key.symbol, "interval": key.interval,
                "unit": unit, "covered": [list(s) for s in covered]}
        table = table.replace_schema_metadata({_S3_META_KEY: json.dumps(meta).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        return buffer.getvalue()

    def merge(self, key: SeriesKey, bars: pd.DataFrame, covered: Sequence[Span]) -> None:
        from trading_assets.adapters.aws.clients import error_code

        if not len(bars) and not covered:
            return
        new_unit = pd.DatetimeIndex(bars.index).unit if len(bars) else None
        current = self._seen.get(key) or self._load(key)
        for attempt in range(self.max_attempts):
            etag, old_bars, old_covered, old_unit = current
            unit = new_unit or old_unit or "ns"
            merged_bars = _combine(old_bars, bars, unit)
            merged_covered = union([*old_covered, *covered])
            body = self._body(key, merged_bars, merged_covered, unit)
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                answer = self._s3().put_object(Bucket=self.bucket, Key=self.object_key(key), Body=body,
                                               ContentType="application/vnd.apache.parquet", **condition)
            except Exception as exc:
                if error_code(exc) not in _CONFLICT_CODES:
                    self._raise_explained(exc)
                    raise
                logger.info("bar cache %s: another writer changed it (attempt %d), merging again",
                            self.object_key(key), attempt + 1)
                if attempt:
                    self.sleep(min(0.05 * 2 ** attempt, 1.0))
                current = self._load(key)
                continue
            self._seen[key] = (answer.get("ETag"), merged_bars, merged_covered, unit)
            return
        raise BarCacheConflict(f"s3://{self.bucket}/{self.object_key(key)} changed under every one of "
                               f"{self.max_attempts} conditional writes; nothing stored this time")


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class InnerRequest:
    """One call the cache made to its inner provider (for logs and tests)."""

    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp


class CachedMarketData:
    """`MarketData` that asks `inner` only for the bars `store` does not hold (see module doc).

    `name` is the inner provider's, so callers, logs and the cache keys see the provider.
    `clock` says what "now" is (closed bars only are stored); `settle` how long after its
    close an absent bar is trusted to be absent. `requests` lists every inner call."""

    def __init__(self, inner: MarketData, store: BarStore, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 settle: pd.Timedelta | float = DEFAULT_SETTLE) -> None:
        self.inner = inner
        self.store = store
        self.clock = clock
        self.settle = settle if isinstance(settle, pd.Timedelta) else pd.Timedelta(seconds=float(settle))
        self.name = inner.name
        self.requests: list[InnerRequest] = []

    def __repr__(self) -> str:
        return f"CachedMarketData({self.inner!r}, {type(self.store).__name__})"

    def get_bars(self, symbols: Sequence[str], start: datetime, end: datetime, interval: str) -> pd.DataFrame:
        """Bars whose start lies in [start, end), as the inner provider would return them."""
        bounds = interval_bounds(interval)
        if bounds is None:
            logger.warning("bar cache: interval %r not understood, asking %s directly", interval, self.name)
            return self.inner.get_bars(symbols, start, end, interval)
        lo, hi = _ns(_utc(start)), _ns(_utc(end))
        if hi <= lo:
            return empty_bars()
        shortest, longest = (int(b.value) for b in bounds)
        now = _ns(_utc(self.clock()))
        # Bar starts are whole seconds: s is closed iff s + longest <= now, i.e. s < closed_until.
        closed_until = _floor_second(now - longest) + SECOND_NS
        trusted_until = _floor_second(now - longest - int(self.settle.value)) + SECOND_NS
        wanted = list(dict.fromkeys(symbols))
        keys = {s: SeriesKey(self.name, s, interval.strip().lower()) for s in wanted}
        held = {s: self.store.read(keys[s], lo, hi) for s in wanted}
        groups: dict[tuple[Span, ...], list[str]] = {}
        for s in wanted:
            missing = tuple(subtract((lo, hi), held[s].covered))
            if missing:
                groups.setdefault(missing, []).append(s)
        fresh: dict[str, list[pd.DataFrame]] = {s: [] for s in wanted}
        for spans, group in groups.items():
            for a, b in spans:
                ask_end = b - MICROSECOND_NS if b % SECOND_NS == 0 and b - a > MICROSECOND_NS else b
                request = InnerRequest(tuple(group), _stamp(a), _stamp(ask_end))
                self.requests.append(request)
                frame = self.inner.get_bars(list(group), request.start, request.end, interval)
                starts = pd.DatetimeIndex(frame.index).as_unit("ns").asi8 if len(frame) else np.array([], "int64")
                inside = frame[(starts >= a) & (starts < b)] if len(frame) else frame
                for s in group:
                    rows = _series_bars(inside[inside["symbol"] == s]) if len(inside) else empty_series_bars()
                    keep, covered = self._storable(rows, a, b, closed_until, trusted_until, shortest)
                    if len(keep) or covered:
                        self.store.merge(keys[s], keep, covered)
                    if len(rows):
                        fresh[s].append(rows)
        out = self._assemble(wanted, held, fresh)
        logger.info("bar cache %s %s: %d symbols, %d from the cache alone, %d inner calls (%s)", self.name,
                    interval, len(wanted), len(wanted) - sum(map(len, groups.values())),
                    sum(len(sp) for sp in groups), "; ".join(
                        f"{','.join(g)} {len(sp)} span(s)" for sp, g in groups.items()) or "none")
        return out

    @staticmethod
    def _storable(rows: pd.DataFrame, a: int, b: int, closed_until: int, trusted_until: int,
                  shortest: int) -> tuple[pd.DataFrame, list[Span]]:
        """What of one symbol's answer for [a, b) may be stored: the closed, finite bars,
        and the spans that answer covers for good."""
        starts = pd.DatetimeIndex(rows.index).as_unit("ns").asi8
        finite = np.isfinite(rows.to_numpy(dtype="float64")).all(axis=1) if len(rows) else np.array([], bool)
        closed = starts < closed_until
        keep = rows[finite & closed]
        seen = starts[closed]
        # Known: every start up to the last closed bar seen, and up to `shortest` after it
        # (bars of one interval never overlap); beyond that, a start without a bar only once
        # the bar would have closed `settle` ago. The forming bar is never inside.
        known_until = max(trusted_until, int(seen.max()) + shortest) if len(seen) else trusted_until
        cover_end = min(b, known_until)
        if cover_end <= a:
            return keep, []
        covered = [(a, cover_end)]
        for i in np.flatnonzero(closed & ~finite):  # a NaN bar's own time stays uncovered: asked again
            s = int(starts[i])
            later = starts[starts > s]
            hole_end = min(s + shortest, int(later.min()) if len(later) else s + shortest)
            covered = [piece for span in covered for piece in subtract(span, [(s, hole_end)])]
        return keep, covered

    @staticmethod
    def _assemble(wanted: list[str], held: dict[str, CachedSeries],
                  fresh: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
        """Cached and fresh bars as one frame in the inner provider's schema and unit."""
        unit = next((str(pd.DatetimeIndex(f.index).unit) for s in wanted for f in fresh[s] if len(f)), None)
        unit = unit or next((held[s].unit for s in wanted if held[s].unit and len(held[s].bars)), None)
        parts = []
        for s in wanted:
            series = _combine(held[s].bars, pd.concat(fresh[s]) if fresh[s] else empty_series_bars(),
                              unit or "ns")
            if len(series):
                parts.append(series.assign(symbol=s))
        if not parts:
            return empty_bars()
        return normalise_bars(pd.concat(parts))
