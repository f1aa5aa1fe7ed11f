"""Alpaca stock bars as a `MarketData` provider (alpaca-py `StockHistoricalDataClient`).

alpaca-py follows `next_page_token` itself and merges pages per symbol; we add what it
lacks: a timeout and client-side rate limit on every page request, the IEX feed by
default (the SIP default is refused on free plans with a 403 that has no `code`),
typed errors instead of `APIError`/`KeyError`, and the project's bar schema.

Timestamps: Alpaca labels a bar by its start in UTC. Daily bars are labelled at
midnight New York (04:00Z or 05:00Z depending on DST); like every provider here we
relabel them to 00:00 UTC of the session date, so a day is the same row whichever
provider served it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from trading_assets.adapters.alpaca.broker import PacedSession
from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.ports import MarketDataError, RateLimited, UnknownSymbolError

EXCHANGE_TZ = "America/New_York"

TIMEFRAMES: dict[str, TimeFrame] = {
    "1min": TimeFrame(1, TimeFrameUnit.Minute),
    "5min": TimeFrame(5, TimeFrameUnit.Minute),
    "15min": TimeFrame(15, TimeFrameUnit.Minute),
    "30min": TimeFrame(30, TimeFrameUnit.Minute),
    "1h": TimeFrame(1, TimeFrameUnit.Hour),
    "1d": TimeFrame(1, TimeFrameUnit.Day),
}


def _utc(ts: datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"start/end must be tz-aware, got naive {ts!r}")
    return t.tz_convert("UTC")


def _message(err: APIError) -> str:
    try:
        body = json.loads(str(err))
        return str(body.get("message") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        return str(err)[:200] or "(empty body)"


class AlpacaBars:
    """Bars from Alpaca's market-data API, many symbols per request, in the bar schema."""

    name = "alpaca"

    def __init__(
        self,
        api_key: str,
        secret_key: str,
        url_override: str | None = None,
        feed: str = "iex",
        adjustment: str = "all",
        timeout: float = 10.0,
        rate_limit_per_minute: int | None = 200,
        limiter: RateLimiter | None = None,
        retry_wait_seconds: float | None = None,
    ) -> None:
        self.client = StockHistoricalDataClient(
            api_key, secret_key, raw_data=True, url_override=url_override
        )
        if limiter is None and rate_limit_per_minute:
            limiter = RateLimiter(rate_limit_per_minute, 60.0)
        self.client._session = PacedSession(timeout, limiter)
        if retry_wait_seconds is not None:
            self.client._retry_wait = retry_wait_seconds
        self.feed = DataFeed(feed)
        self.adjustment = Adjustment(adjustment)

    def __repr__(self) -> str:
        return f"AlpacaBars(feed={self.feed.value})"

    def get_bars(
        self, symbols: Sequence[str], start: datetime, end: datetime, interval: str
    ) -> pd.DataFrame:
        """Bars whose start lies in [start, end) for all `symbols`, one request chain.

        Raises MarketDataError (never returns silently empty bars) when a symbol has no
        bars in the window, UnknownSymbolError for a symbol Alpaca calls invalid.
        """
        if interval not in TIMEFRAMES:
            raise ValueError(
                f"interval {interval!r} not supported; use one of {sorted(TIMEFRAMES)}"
            )
        symbols = list(dict.fromkeys(symbols))
        if not symbols:
            return empty_bars()
        t0, t1 = _utc(start), _utc(end)
        request = StockBarsRequest(
            symbol_or_symbols=symbols,
            timeframe=TIMEFRAMES[interval],
            start=t0.to_pydatetime(),
            end=t1.to_pydatetime(),
            feed=self.feed,
            adjustment=self.adjustment,
        )
        raw = self._fetch(request, symbols)
        frame = self._frame(raw, interval)
        frame = frame[(frame.index >= t0) & (frame.index < t1)]
        missing = sorted(set(symbols) - set(frame["symbol"]))
        if missing:
            raise MarketDataError(
                f"Alpaca ({self.feed.value} feed) returned no {interval} bars for {missing} "
                f"in [{t0.isoformat()}, {t1.isoformat()})"
            )
        return normalise_bars(frame)

    def _fetch(self, request: StockBarsRequest, symbols: list[str]) -> dict[str, Any]:
        try:
            raw = self.client.get_stock_bars(request)
        except APIError as err:
            status, message = err.status_code, _message(err)
            if status == 429:
                raise RateLimited(
                    f"Alpaca market data rate limit: {message}", broker="alpaca"
                ) from err
            if status == 400 and "symbol" in message.lower():
                raise UnknownSymbolError(f"Alpaca: {message} (asked for {symbols})") from err
            if status == 401:
                raise MarketDataError(f"Alpaca refused the API key (HTTP 401): {message}") from err
            hint = " (free plans must use feed='iex')" if "SIP" in message else ""
            raise MarketDataError(f"Alpaca market data HTTP {status}: {message}{hint}") from err
        except requests.RequestException as err:  # timeouts, refused, non-JSON 200
            raise MarketDataError(f"Alpaca market data unreachable: {type(err).__name__}") from err
        except ValueError as err:  # the response held no known data key
            raise MarketDataError(f"Alpaca market data answer not understood: {err}") from err
        if not isinstance(raw, dict):
            raise MarketDataError(f"Alpaca market data answer not understood: {type(raw).__name__}")
        return raw

    @staticmethod
    def _frame(raw: dict[str, Any], interval: str) -> pd.DataFrame:
        parts = []
        for symbol, bars in raw.items():
            if not bars:
                continue
            part = pd.DataFrame.from_records(bars)
            part["symbol"] = symbol
            parts.append(part)
        if not parts:
            return empty_bars()
        df = pd.concat(parts, ignore_index=True)
        ts = pd.to_datetime(df["t"], utc=True)
        if interval == "1d":
            session_day = ts.dt.tz_convert(EXCHANGE_TZ).dt.tz_localize(None).dt.normalize()
            ts = session_day.dt.tz_localize("UTC")
        out = pd.DataFrame(
            {
                "symbol": df["symbol"].to_numpy(),
                "open": df["o"].to_numpy(dtype="float64"),
                "high": df["h"].to_numpy(dtype="float64"),
                "low": df["l"].to_numpy(dtype="float64"),
                "close": df["c"].to_numpy(dtype="float64"),
                "volume": df["v"].to_numpy(dtype="float64"),
            },
            index=pd.DatetimeIndex(ts, name="timestamp"),
        )
        return out[~out.index.isna()]
