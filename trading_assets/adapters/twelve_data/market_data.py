"""Twelve Data `/time_series` as a `MarketData` provider (plain `requests`).

What the vendor does that a naive client gets wrong (wire spec section 4):

- Errors arrive as `{"code", "message", "status": "error"}` with HTTP 200 *or* an HTTP
  status equal to the code. We check both, and a non-JSON or empty body is an error too.
- 429 means two different things: out of credits for the current minute (wait for the
  next minute and retry, a bounded number of times) or for the day (stop: `RateLimited`
  with the seconds until midnight UTC). Free tier: 8 credits/min, 800/day, 1 credit
  per symbol, so a client-side limiter paces requests at the per-minute limit.
- `datetime` values are wall-clock strings in the `timezone` we ask for. We ask in a
  known zone (UTC by default, so no DST ambiguity at all) and localise with the tz
  database when another zone is chosen. Daily rows are dates: labelled 00:00 UTC of
  the session date, the convention every provider here shares.
- The API key travels in the `Authorization` header, never in a URL, so it cannot end
  up in an exception message or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import requests

from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.ports import MarketDataError, RateLimited, UnknownSymbolError

log = logging.getLogger(__name__)

BASE_URL = "https://api.twelvedata.com"

INTERVALS = {
    "1min": "1min",
    "5min": "5min",
    "15min": "15min",
    "30min": "30min",
    "45min": "45min",
    "1h": "1h",
    "2h": "2h",
    "4h": "4h",
    "1d": "1day",
}


class _VendorError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TwelveData:
    """Bars from Twelve Data, one request per symbol (1 credit each), in the bar schema."""

    name = "twelve_data"

    def __init__(
        self,
        api_key: str,
        base_url: str = BASE_URL,
        session: requests.Session | None = None,
        timeout: float = 10.0,
        credits_per_minute: int | None = 8,
        timezone: str = "UTC",
        outputsize: int = 5000,
        max_minute_retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout
        self.timezone = timezone
        self.outputsize = int(outputsize)
        self.max_minute_retries = int(max_minute_retries)
        self._sleep = sleep
        self._clock = clock
        if limiter is None and credits_per_minute:
            limiter = RateLimiter(credits_per_minute, 60.0, clock=clock, sleep=sleep)
        self.limiter = limiter

    def __repr__(self) -> str:
        return f"TwelveData(base_url={self.base_url!r}, timezone={self.timezone!r})"

    # ------------------------------------------------------------------ public
    def get_bars(self, symbols: Sequence[str], start: datetime, end: datetime, interval: str) -> pd.DataFrame:
        """Bars whose start lies in [start, end) for every symbol; never silently empty."""
        if interval not in INTERVALS:
            raise ValueError(f"interval {interval!r} not supported; use one of {sorted(INTERVALS)}")
        t0, t1 = _utc(start), _utc(end)
        parts = []
        for symbol in dict.fromkeys(symbols):
            part = self._series(symbol, t0, t1, interval)
            part = part[(part.index >= t0) & (part.index < t1)]
            if part.empty:
                raise MarketDataError(
                    f"Twelve Data has no {interval} bars for {symbol} in [{t0.isoformat()}, {t1.isoformat()})"
                )
            parts.append(part)
        if not parts:
            return empty_bars()
        return normalise_bars(pd.concat(parts))

    # ------------------------------------------------------------------ paging
    def _series(self, symbol: str, t0: pd.Timestamp, t1: pd.Timestamp, interval: str) -> pd.DataFrame:
        """All bars of one symbol, walking back from `t1` a page of `outputsize` at a time."""
        daily = interval == "1d"
        start_s = self._wire_time(t0, daily)
        cursor = self._wire_time(t1, daily)
        rows: list[dict[str, Any]] = []  # newest first, as the vendor sends them
        while True:
            params = {
                "symbol": symbol,
                "interval": INTERVALS[interval],
                "start_date": start_s,
                "end_date": cursor,
                "timezone": self.timezone,
                "outputsize": str(self.outputsize),
                "order": "desc",
            }
            body = self._get("/time_series", params, symbol)
            values = body.get("values")
            if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
                raise MarketDataError(f"Twelve Data answer for {symbol} has no 'values' list")
            fresh = values
            if rows and fresh and fresh[0] == rows[-1]:
                fresh = fresh[1:]  # the cursor row again (end_date is inclusive)
            rows.extend(fresh)
            if len(values) < self.outputsize or not fresh:
                break
            cursor = values[-1]["datetime"]  # the oldest row, in the vendor's own wall clock
        if not rows:
            return empty_bars()
        rows.reverse()  # chronological: DST's repeated hour is then in true order
        return self._frame(symbol, rows, daily)

    def _wire_time(self, ts: pd.Timestamp, daily: bool) -> str:
        if daily:
            return ts.strftime("%Y-%m-%d")
        return ts.tz_convert(self.timezone).strftime("%Y-%m-%d %H:%M:%S")

    def _frame(self, symbol: str, values: list[dict[str, Any]], daily: bool) -> pd.DataFrame:
        """Rows (chronological) to the bar schema; wall-clock times localised in our zone."""
        df = pd.DataFrame.from_records(values)
        try:
            naive = pd.DatetimeIndex(pd.to_datetime(df["datetime"], format="mixed"))
        except (KeyError, ValueError) as err:
            raise MarketDataError(f"Twelve Data rows for {symbol} have unreadable datetimes") from err
        if daily:
            index = naive.normalize().tz_localize("UTC")
        else:
            try:
                index = naive.tz_localize(self.timezone, ambiguous="infer", nonexistent="raise")
            except (ValueError, TypeError) as err:  # pytz/zoneinfo ambiguity errors
                raise MarketDataError(
                    f"Twelve Data times for {symbol} are ambiguous in {self.timezone} (a DST "
                    f"change); request timezone='UTC' instead: {err}"
                ) from err
            index = index.tz_convert("UTC")
        volume = df["volume"] if "volume" in df else pd.Series(0.0, index=df.index)  # FX: none
        try:
            out = pd.DataFrame(
                {
                    "symbol": symbol,
                    "open": df["open"].astype("float64").to_numpy(),
                    "high": df["high"].astype("float64").to_numpy(),
                    "low": df["low"].astype("float64").to_numpy(),
                    "close": df["close"].astype("float64").to_numpy(),
                    "volume": pd.to_numeric(volume, errors="coerce").fillna(0.0).to_numpy("float64"),
                },
                index=pd.DatetimeIndex(index, name="timestamp"),
            )
        except (KeyError, ValueError) as err:
            raise MarketDataError(f"Twelve Data rows for {symbol} are malformed: {err}") from err
        return out

    # ------------------------------------------------------------------ HTTP
    def _get(self, path: str, params: dict[str, str], symbol: str) -> dict[str, Any]:
        """One logical request: paced, minute-limit waits retried, errors typed."""
        attempts = 0
        while True:
            try:
                return self._once(path, params)
            except _VendorError as err:
                if err.code == 429 and not _is_daily_limit(err.message):
                    if attempts < self.max_minute_retries:
                        attempts += 1
                        wait = 60.0 - (self._clock() % 60.0) + 1.0
                        log.warning("twelve data: per-minute credits used up; waiting %.0f s", wait)
                        self._sleep(wait)
                        continue
                    raise RateLimited(
                        f"Twelve Data per-minute credit limit still hit after {attempts} waits: {err.message}",
                        retry_after=60.0,
                        broker=self.name,
                    ) from err
                raise self._typed(err, symbol) from err

    def _once(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        if self.limiter is not None:
            self.limiter.acquire()
        try:
            resp = self.session.get(
                self.base_url + path,
                params=params,
                headers={"Authorization": f"apikey {self._api_key}"},
                timeout=self.timeout,
            )
        except requests.RequestException as err:
            raise MarketDataError(f"Twelve Data unreachable: {type(err).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            snippet = resp.text[:120] if resp.text else "(empty body)"
            raise MarketDataError(
                f"Twelve Data answered HTTP {resp.status_code} with a non-JSON body: {snippet!r}"
            ) from None
        if not isinstance(body, dict):
            raise MarketDataError(f"Twelve Data answered HTTP {resp.status_code} with {type(body)}")
        if resp.status_code >= 400 or body.get("status") == "error":
            try:
                code = int(body.get("code") or resp.status_code)
            except (TypeError, ValueError):
                code = resp.status_code
            raise _VendorError(code, str(body.get("message") or resp.reason or "unknown error"))
        return body

    def _typed(self, err: _VendorError, symbol: str) -> Exception:
        msg = err.message
        if err.code == 429:
            now = pd.Timestamp(self._clock(), unit="s", tz="UTC")
            midnight = now.normalize() + pd.Timedelta(days=1)
            return RateLimited(
                f"Twelve Data daily credit limit reached; no more data until 00:00 UTC: {msg}",
                retry_after=(midnight - now).total_seconds(),
                broker=self.name,
            )
        if err.code == 404 or ("symbol" in msg.lower() and "not found" in msg.lower()):
            return UnknownSymbolError(f"Twelve Data does not know {symbol!r}: {msg}")
        if err.code == 401:
            return MarketDataError(f"Twelve Data refused the API key (401): {msg}")
        return MarketDataError(f"Twelve Data error {err.code} for {symbol}: {msg}")


def _is_daily_limit(message: str) -> bool:
    return "for the day" in message.lower() or "daily" in message.lower()


def _utc(ts: datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"start/end must be tz-aware, got naive {ts!r}")
    return t.tz_convert("UTC")
