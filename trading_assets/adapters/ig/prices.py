"""IG historical prices as a `MarketData` provider (bar frames, tz-aware UTC, mid prices).

Through trading-ig's `fetch_historical_prices_by_epic` (`GET /prices/{epic}`, v3, paged).
Why the details:

- **Mid prices.** IG quotes bid and ask per bar; the project's bars are mids, which is what
  the strategies were designed on. Volume is IG's `lastTradedVolume` (0 for OTC FX).
- **Time zones.** `snapshotTime` is UK local time (BST in summer); `snapshotTimeUTC` is UTC
  and is preferred when present. Without it, UK local times are localised with DST
  handled (the repeated autumn hour is inferred from order).
- **Query window.** IG does not say which zone `from`/`to` are read in, so we ask for the
  union of both readings (`from` = start in UTC, `to` = end in UK time, never narrower
  than asked) and cut to exactly [start, end) in UTC afterwards.
- **Weekly allowance.** IG allows ~10,000 historical points a week per account. Every
  answer reports what is left and when it resets; we remember it, refuse early when we
  know it is used up, and turn IG's 403 into `RateLimited` naming when it resets.
- **Pacing.** The library sleeps `page_wait` seconds after each page; the default (2 s)
  keeps paging within IG's 30 non-trading requests per minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.ports import (
    BrokerError,
    MarketDataError,
    RateLimited,
    UnknownSymbolError,
)

logger = logging.getLogger(__name__)

LONDON = ZoneInfo("Europe/London")

# Our interval names (and common synonyms) -> the resolution aliases trading-ig accepts.
_INTERVALS = {
    "1min": "1Min", "1m": "1Min", "2min": "2Min", "3min": "3Min", "5min": "5Min",
    "5m": "5Min", "10min": "10Min", "15min": "15Min", "15m": "15Min", "30min": "30Min",
    "30m": "30Min", "1h": "1h", "60min": "1h", "2h": "2h", "3h": "3h", "4h": "4h",
    "1d": "D", "1day": "D", "d": "D", "1w": "W", "1wk": "W", "1week": "W", "w": "W",
    "1mo": "ME", "1month": "ME",
}


def ig_resolution(interval: str) -> str:
    """trading-ig's resolution alias for one of our interval names (ValueError if IG has
    no such resolution)."""
    try:
        return _INTERVALS[interval.strip().lower()]
    except KeyError:
        raise ValueError(
            f"IG has no {interval!r} bars; use one of {sorted(_INTERVALS)}") from None


def _utc(ts: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    if stamp.tzinfo is None:
        raise ValueError(f"start/end must be tz-aware, got naive {ts!r}")
    return stamp.tz_convert("UTC")


def _side(value: Any, key: str) -> float:
    if not isinstance(value, dict):
        return np.nan
    v = value.get(key)
    return np.nan if v is None else float(v)


def _mid(leg: Any) -> float:
    """Mid of IG's {bid, ask, lastTraded}; one side or the last trade if that is all."""
    bid, ask, last = _side(leg, "bid"), _side(leg, "ask"), _side(leg, "lastTraded")
    if not np.isnan(bid) and not np.isnan(ask):
        return (bid + ask) / 2
    for v in (bid, ask, last):
        if not np.isnan(v):
            return v
    return np.nan


def bar_times_utc(prices: Sequence[dict[str, Any]]) -> pd.DatetimeIndex:
    """Bar start times in UTC: `snapshotTimeUTC` when IG sends it, else UK-local
    `snapshotTime` localised across DST."""
    if prices and all(p.get("snapshotTimeUTC") for p in prices):
        return pd.DatetimeIndex(
            pd.to_datetime([p["snapshotTimeUTC"] for p in prices], format="%Y-%m-%dT%H:%M:%S")
        ).tz_localize("UTC")
    local = pd.DatetimeIndex(
        pd.to_datetime([p["snapshotTime"] for p in prices], format="mixed")
    )
    try:
        aware = local.tz_localize(LONDON, ambiguous="infer", nonexistent="shift_forward")
    except Exception:  # a lone ambiguous bar: nothing to infer from, take the BST reading
        aware = local.tz_localize(LONDON, ambiguous=np.ones(len(local), dtype=bool),
                                  nonexistent="shift_forward")
    return aware.tz_convert("UTC")


def prices_to_bars(epic: str, prices: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """IG `prices` rows as a bar frame of mid prices for `epic`."""
    if not prices:
        return empty_bars()
    frame = pd.DataFrame(
        {
            "symbol": epic,
            "open": [_mid(p.get("openPrice")) for p in prices],
            "high": [_mid(p.get("highPrice")) for p in prices],
            "low": [_mid(p.get("lowPrice")) for p in prices],
            "close": [_mid(p.get("closePrice")) for p in prices],
            "volume": [float(p.get("lastTradedVolume") or 0.0) for p in prices],
        },
        index=bar_times_utc(prices),
    )
    frame = frame[~frame.index.duplicated(keep="last")]
    return normalise_bars(frame)


class IGPrices:
    """`MarketData` over IG's historical prices (symbols are epics)."""

    name = "ig"

    def __init__(
        self,
        username: str = "",
        password: str = "",
        api_key: str = "",
        acc_type: str = "demo",
        acc_number: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        *,
        connection: IGConnection | None = None,
        page_size: int = 200,
        page_wait: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = connection or IGConnection(
            username, password, api_key, acc_type, acc_number, base_url, timeout, sleep=sleep)
        self.page_size = page_size
        self.page_wait = page_wait
        self.clock = clock
        self.remaining_allowance: int | None = None
        self.allowance_resets_at: datetime | None = None

    # ------------------------------------------------------------------ allowance
    def _remember_allowance(self, metadata: dict[str, Any] | None) -> None:
        allowance = (metadata or {}).get("allowance") or {}
        if "remainingAllowance" in allowance:
            self.remaining_allowance = int(allowance["remainingAllowance"])
        if allowance.get("allowanceExpiry") is not None:
            self.allowance_resets_at = self.clock() + timedelta(
                seconds=float(allowance["allowanceExpiry"]))

    def _allowance_exhausted(self, cause: str) -> RateLimited:
        if self.allowance_resets_at is not None:
            wait = max(0.0, (self.allowance_resets_at - self.clock()).total_seconds())
            when = f"resets at {self.allowance_resets_at.isoformat(timespec='seconds')} " \
                   f"(in {wait / 3600:.1f} h)"
        else:
            wait, when = None, "reset time unknown (no successful price call seen yet)"
        return RateLimited(f"IG weekly historical-price allowance used up ({cause}); {when}",
                           broker=self.name, retry_after=wait)

    def _check_allowance(self) -> None:
        if self.remaining_allowance == 0 and self.allowance_resets_at is not None \
                and self.allowance_resets_at > self.clock():
            raise self._allowance_exhausted("remembered from the last answer")

    # ------------------------------------------------------------------ bars
    def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, interval: str
    ) -> pd.DataFrame:
        """Mid-price bars whose start lies in [start, end), UTC, all epics stacked."""
        resolution = ig_resolution(interval)
        lo, hi = _utc(start), _utc(end)
        if hi <= lo:
            return empty_bars()
        frames = [self._bars_for(epic, resolution, lo, hi) for epic in dict.fromkeys(symbols)]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_bars()
        return normalise_bars(pd.concat(frames))

    def _bars_for(self, epic: str, resolution: str, lo: pd.Timestamp,
                  hi: pd.Timestamp) -> pd.DataFrame:
        self._check_allowance()
        query_from = lo.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S")
        query_to = hi.tz_convert(LONDON).strftime("%Y-%m-%dT%H:%M:%S")

        def fetch() -> dict[str, Any]:
            return self.conn.service.fetch_historical_prices_by_epic(
                epic, resolution=resolution, start_date=query_from, end_date=query_to,
                pagesize=self.page_size, wait=self.page_wait,
                format=lambda prices, _version: prices_to_bars(epic, prices),
            )

        try:
            data = self.conn.run(fetch)
        except RateLimited:
            raise
        except BrokerError as exc:
            raise MarketDataError(f"IG prices for {epic}: {exc}") from exc
        except Exception as exc:  # the library raises bare Exception(errorCode)
            text = str(exc)
            if "historical-data-allowance" in text:
                self.remaining_allowance = 0
                raise self._allowance_exhausted(text) from exc
            if "epic.unavailable" in text or "instrument.epic" in text:
                raise UnknownSymbolError(f"IG does not know epic {epic!r} ({text})") from exc
            raise MarketDataError(f"IG prices for {epic} failed: {text[:200]}") from exc
        self._remember_allowance(data.get("metadata"))
        bars = data["prices"]
        if not isinstance(bars, pd.DataFrame):  # pandas-less library mode: raw rows
            bars = prices_to_bars(epic, bars)
        keep = (bars.index >= lo) & (bars.index < hi)
        logger.info("IG %s %s: %d bars, allowance left %s", epic, resolution,
                    int(keep.sum()), self.remaining_allowance)
        return bars[keep]
