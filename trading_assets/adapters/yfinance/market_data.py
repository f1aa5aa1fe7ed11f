"""yfinance as a `MarketData` provider, with an injectable HTTP session.

yfinance hard-codes Yahoo's hosts and, by default, hides failures: a missing symbol or
an unreachable server comes back as an *empty DataFrame* plus a log line. Empty bars
would silently turn into "no signal", so this adapter turns them into
`UnknownSymbolError` / `MarketDataError` (with yfinance's own reason), and
`YFRateLimitError` into `RateLimited`.

The session: `YahooSession` is a plain `requests.Session` with a default timeout that
can also rewrite every `*.yahoo.com` URL to another base URL (a loopback fake in tests,
wire spec section 5). yfinance keeps one process-wide session: the last one passed wins.
Tests also need `YF_DISABLE_CURL_CFFI=1`, or yfinance misses `requests.HTTPError`.

Time stamps: intraday bars come in the exchange's zone and are converted to UTC (bar
start); daily bars are labelled 00:00 UTC of the session date, the shared convention.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import requests
import yfinance as yf
from yfinance.exceptions import YFRateLimitError

from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.ports import MarketDataError, RateLimited, UnknownSymbolError

log = logging.getLogger(__name__)

INTERVALS = {"1min": "1m", "5min": "5m", "15min": "15m", "30min": "30m", "1h": "1h", "1d": "1d"}

_UNKNOWN_HINTS = ("no timezone found", "symbol may be delisted", "quote not found")  # not "no price data"


class YahooSession(requests.Session):
    """A requests session with a default timeout, optionally redirecting Yahoo's hosts.

    `redirect_to="http://127.0.0.1:PORT"` sends every request for `*.yahoo.com` there,
    keeping path and query, with the original host in `X-Forwarded-Host`.
    """

    def __init__(
        self, redirect_to: str | None = None, timeout: float = 10.0, limiter: RateLimiter | None = None
    ) -> None:
        super().__init__()
        self.redirect_to = urlsplit(redirect_to) if redirect_to else None
        self.timeout = timeout
        self.limiter = limiter

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        parts = urlsplit(url)
        host = parts.hostname or ""
        if self.redirect_to is not None and (host == "yahoo.com" or host.endswith(".yahoo.com")):
            target = self.redirect_to
            url = urlunsplit((target.scheme, target.netloc, parts.path or "/", parts.query, ""))
            headers = dict(kwargs.get("headers") or {})
            headers["X-Forwarded-Host"] = host
            kwargs["headers"] = headers
        if self.limiter is not None:
            self.limiter.acquire()
        return super().request(method, url, *args, **kwargs)


class YFinanceProvider:
    """Bars from Yahoo Finance through yfinance, one `Ticker.history` call per symbol."""

    name = "yfinance"

    def __init__(
        self,
        session: requests.Session | None = None,
        tz_cache_dir: str | Path | None = None,
        timeout: float = 10.0,
        auto_adjust: bool = True,
    ) -> None:
        # None lets yfinance pick its own (curl_cffi) session: the right thing in production.
        self.session = session
        self.timeout = timeout
        self.auto_adjust = auto_adjust
        if tz_cache_dir is not None:
            Path(tz_cache_dir).mkdir(parents=True, exist_ok=True)
            yf.set_tz_cache_location(str(tz_cache_dir))

    def get_bars(self, symbols: Sequence[str], start: datetime, end: datetime, interval: str) -> pd.DataFrame:
        """Bars whose start lies in [start, end); a symbol without bars is an error."""
        if interval not in INTERVALS:
            raise ValueError(f"interval {interval!r} not supported; use one of {sorted(INTERVALS)}")
        t0, t1 = _utc(start), _utc(end)
        parts = [self._one(symbol, t0, t1, interval) for symbol in dict.fromkeys(symbols)]
        if not parts:
            return empty_bars()
        return normalise_bars(pd.concat(parts))

    def _one(self, symbol: str, t0: pd.Timestamp, t1: pd.Timestamp, interval: str) -> pd.DataFrame:
        kwargs: dict[str, Any] = {}
        if self.session is not None:
            kwargs["session"] = self.session
        ticker = yf.Ticker(symbol, **kwargs)
        daily = interval == "1d"
        try:
            raw = ticker.history(
                start=t0.to_pydatetime() if not daily else t0.strftime("%Y-%m-%d"),
                end=t1.to_pydatetime() if not daily else t1.strftime("%Y-%m-%d"),
                interval=INTERVALS[interval],
                auto_adjust=self.auto_adjust,
                actions=False,
                prepost=False,
                timeout=self.timeout,
            )
        except YFRateLimitError as err:
            raise RateLimited(f"Yahoo Finance rate limit while fetching {symbol}: {err}", broker=self.name) from err
        except requests.RequestException as err:
            raise MarketDataError(f"Yahoo Finance unreachable for {symbol}: {type(err).__name__}") from err
        except Exception as err:  # yfinance raises assorted KeyError/TypeError on odd payloads
            raise MarketDataError(f"yfinance failed for {symbol}: {type(err).__name__}: {err}") from err
        if raw is None or raw.empty:
            raise self._why_empty(ticker, symbol, t0, t1, interval)
        frame = self._frame(symbol, raw, daily)
        frame = frame[(frame.index >= t0) & (frame.index < t1)]
        if frame.empty:
            raise MarketDataError(
                f"Yahoo Finance has no {interval} bars for {symbol} in [{t0.isoformat()}, {t1.isoformat()})"
            )
        return frame

    @staticmethod
    def _why_empty(ticker: Any, symbol: str, t0: pd.Timestamp, t1: pd.Timestamp, interval: str) -> MarketDataError:
        """yfinance logged its reason and returned nothing; recover the reason."""
        reason = ""
        history = getattr(ticker, "_price_history", None)
        if history is not None:
            reason = str(getattr(history, "_last_error", "") or "")
        window = f"[{t0.isoformat()}, {t1.isoformat()})"
        if any(h in reason.lower() for h in _UNKNOWN_HINTS):
            return UnknownSymbolError(f"Yahoo Finance does not know {symbol!r} ({reason})")
        return MarketDataError(
            f"Yahoo Finance returned no {interval} bars for {symbol} in {window}" + (f": {reason}" if reason else "")
        )

    @staticmethod
    def _frame(symbol: str, raw: pd.DataFrame, daily: bool) -> pd.DataFrame:
        index = pd.DatetimeIndex(raw.index)
        if daily:
            index = pd.DatetimeIndex(index.tz_localize(None).normalize()).tz_localize("UTC")
        else:
            index = index.tz_convert("UTC")
        return pd.DataFrame(
            {
                "symbol": symbol,
                "open": raw["Open"].to_numpy("float64"),
                "high": raw["High"].to_numpy("float64"),
                "low": raw["Low"].to_numpy("float64"),
                "close": raw["Close"].to_numpy("float64"),
                "volume": pd.to_numeric(raw["Volume"], errors="coerce").fillna(0.0).to_numpy("float64"),
            },
            index=pd.DatetimeIndex(index, name="timestamp"),
        ).dropna(subset=["open", "high", "low", "close"])


def _utc(ts: datetime) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    if t.tzinfo is None:
        raise ValueError(f"start/end must be tz-aware, got naive {ts!r}")
    return t.tz_convert("UTC")
