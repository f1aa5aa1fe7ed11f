"""Loopback fake of the Yahoo Finance endpoints yfinance 1.7 calls (wire spec section 5).

Reached through `YahooSession(redirect_to=fake.url)`, which rewrites *.yahoo.com. Serves
the cookie (`fc.yahoo.com/`), the crumb (`/v1/test/getcrumb`) and `/v8/finance/chart/{T}`
with the `tradingPeriods` yfinance needs for intraday bars (NYSE sessions from the
project calendar, half days included). Bars are stored per (symbol, Yahoo interval) as
UTC bar starts; 30m requests arrive as 15m (yfinance resamples), so store 15m bars.

Faults: `rate_limit` (429 on chart and crumb: yfinance raises YFRateLimitError),
`invalid_crumb` (401 once; yfinance refreshes its crumb and retries), `server_error`,
`non_json`, `empty_result` (chart with no quotes).
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import pandas as pd

from trading_assets.core import calendar as nyse
from trading_assets_tests.fakes.alpaca import QuickStopServer
from trading_assets_tests.fakes.base import Request, Response, route

_SECONDS = {"1m": 60, "2m": 120, "5m": 300, "15m": 900, "30m": 1800, "60m": 3600, "1h": 3600, "90m": 5400, "1d": 86_400}


class FakeYahoo(QuickStopServer):
    """Yahoo's chart API for NYSE-listed symbols (and 24-hour symbols such as FX)."""

    def __init__(self) -> None:
        super().__init__()
        self.crumb = "fAkEcRuMb" + uuid.uuid4().hex[:6]
        self.bars: dict[tuple[str, str], pd.DataFrame] = {}
        self.meta: dict[str, dict[str, Any]] = {}

    def add_bars(
        self, symbol: str, interval: str, frame: pd.DataFrame, tz: str = "America/New_York", session: str = "nyse"
    ) -> None:
        """`frame`: tz-aware bar starts (daily: any time on the session date), OHLCV.

        `session` is "nyse" (regular hours from the NYSE calendar) or "24h".
        """
        self.bars[(symbol, interval)] = frame.set_axis(pd.DatetimeIndex(frame.index).tz_convert("UTC")).sort_index()
        self.meta[symbol] = {"tz": tz, "session": session}

    def chart_requests(self, symbol: str | None = None) -> list[Request]:
        prefix = "/v8/finance/chart/" + (symbol or "")
        return [r for r in self.requests if r.path.startswith(prefix)]

    # -- faults
    def fault_rate_limit(self, times: int = 10) -> None:
        """429 on the crumb and chart endpoints (yfinance retries once, then raises)."""
        self.faults.add("rate_limit", path=r"^/v8/finance/chart/|^/v1/test/getcrumb", times=times)

    def fault_invalid_crumb(self) -> None:
        self.faults.add("invalid_crumb", path=r"^/v8/finance/chart/")

    def fault_server_error(self, times: int = 2) -> None:
        self.faults.add("server_error", path=r"^/v8/finance/chart/", times=times)

    def fault_non_json(self, times: int = 2) -> None:
        self.faults.add("non_json", path=r"^/v8/finance/chart/", times=times)

    def fault_empty_result(self) -> None:
        self.faults.add("empty_result", path=r"^/v8/finance/chart/")

    def dispatch(self, req: Request) -> Response:
        fault = self.faults.take(req, kinds=("rate_limit",))
        if fault is not None:
            with self.lock:
                self.requests.append(req)
            return Response(429, "Too Many Requests", headers={"Content-Type": "text/html"})
        return super().dispatch(req)

    # -- cookie and crumb
    @route("GET", r"/")
    def cookie(self, req: Request) -> Response:
        return Response(
            404,
            "<html>fc</html>",
            headers={"Content-Type": "text/html", "Set-Cookie": "A3=d=AQABBfake&S=AQAAAfake; Path=/; HttpOnly"},
        )

    @route("GET", r"/v1/test/getcrumb")
    def getcrumb(self, req: Request) -> Response:
        return Response(200, self.crumb)

    @route("GET", r"/consent")
    def consent(self, req: Request) -> Response:
        return Response(200, "<html><body>no consent needed</body></html>", headers={"Content-Type": "text/html"})

    @route("GET", r"/v10/finance/quoteSummary/(?P<symbol>[^/]+)")
    def quote_summary(self, req: Request, symbol: str) -> Response:
        return Response(
            404,
            {
                "quoteSummary": {
                    "result": None,
                    "error": {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"},
                }
            },
        )

    @route("GET", r"/v7/finance/quote")
    def quote(self, req: Request) -> Response:
        return Response(200, {"quoteResponse": {"result": [], "error": None}})

    # -- chart
    def _trading_periods(self, symbol: str, first: date, last: date) -> list[list[dict[str, Any]]]:
        meta = self.meta[symbol]
        tz = meta["tz"]
        periods = []
        if meta["session"] == "nyse":
            days = nyse.sessions_between(first, last)
            spans = [nyse.session_open_close(d) for d in days]
        else:
            days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
            spans = [(pd.Timestamp(d, tz=tz), pd.Timestamp(d, tz=tz) + pd.Timedelta(days=1)) for d in days]
        for open_, close in spans:
            offset = int(open_.tz_convert(tz).utcoffset().total_seconds())
            periods.append(
                [
                    {
                        "timezone": open_.tz_convert(tz).strftime("%Z"),
                        "start": int(open_.timestamp()),
                        "end": int(close.timestamp()),
                        "gmtoffset": offset,
                    }
                ]
            )
        return periods

    def _meta(self, symbol: str, interval: str, rng: str | None, now: pd.Timestamp) -> dict[str, Any]:
        tz = self.meta[symbol]["tz"]
        local = now.tz_convert(tz)
        offset = int(local.utcoffset().total_seconds())
        period = {
            "timezone": local.strftime("%Z"),
            "start": int(now.timestamp()) - 3600,
            "end": int(now.timestamp()),
            "gmtoffset": offset,
        }
        return {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NMS",
            "fullExchangeName": "NasdaqGS",
            "instrumentType": "EQUITY" if self.meta[symbol]["session"] == "nyse" else "CURRENCY",
            "firstTradeDate": 345479400,
            "regularMarketTime": int(now.timestamp()),
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": local.strftime("%Z"),
            "exchangeTimezoneName": tz,
            "priceHint": 2,
            "currentTradingPeriod": {"pre": dict(period), "regular": dict(period), "post": dict(period)},
            "dataGranularity": interval,
            "range": rng or "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }

    @staticmethod
    def _not_found(symbol: str) -> Response:
        return Response(
            404,
            {
                "chart": {
                    "result": None,
                    "error": {"code": "Not Found", "description": f"No data found, symbol may be delisted ({symbol})"},
                }
            },
        )

    @route("GET", r"/v8/finance/chart/(?P<symbol>[^/]+)")
    def chart(self, req: Request, symbol: str) -> Response:
        fault = self.faults.take(req)
        if fault is not None:
            if fault.kind == "invalid_crumb":
                return Response(
                    401,
                    {"finance": {"result": None, "error": {"code": "Unauthorized", "description": "Invalid Crumb"}}},
                )
            if fault.kind == "server_error":
                return Response(
                    500,
                    {
                        "finance": {
                            "result": None,
                            "error": {"code": "internal-error", "description": "Internal Server Error"},
                        }
                    },
                )
            if fault.kind == "non_json":
                return Response(
                    200, "<html><body>Will be back soon</body></html>", headers={"Content-Type": "text/html"}
                )
        if symbol not in self.meta:
            return self._not_found(symbol)
        q = req.query
        interval = q.get("interval", "1d")
        rng = q.get("range")
        now = pd.Timestamp.now(tz="UTC").floor("s")
        frame = self.bars.get((symbol, interval))
        if rng is not None:  # the time-zone probe (range=1d): metadata and the last bar at most
            start, end = now - pd.Timedelta(days=1), now
        else:
            start = pd.Timestamp(int(q.get("period1", 0)), unit="s", tz="UTC")
            end = pd.Timestamp(int(q.get("period2", int(now.timestamp()))), unit="s", tz="UTC")
        if frame is None:
            frame = pd.DataFrame(
                columns=["open", "high", "low", "close", "volume"], index=pd.DatetimeIndex([], tz="UTC")
            )
        rows = frame[(frame.index >= start) & (frame.index < end)]
        if fault is not None and fault.kind == "empty_result":
            rows = rows.iloc[0:0]
        tz = self.meta[symbol]["tz"]
        meta = self._meta(symbol, interval, rng, now)
        if interval != "1d" and rng is None:
            first = start.tz_convert(tz).date()
            last = (end - pd.Timedelta(seconds=1)).tz_convert(tz).date()
            meta["tradingPeriods"] = self._trading_periods(symbol, first, last)
        result: dict[str, Any] = {"meta": meta}
        quote: dict[str, list[Any]] = {}  # Yahoo sends `[{}]` when there are no bars
        if len(rows):
            result["timestamp"] = [int(t.timestamp()) for t in rows.index]
            for col in ("open", "high", "low", "close"):
                quote[col] = [float(v) for v in rows[col]]
            quote["volume"] = [int(v) for v in rows["volume"]]
        result["indicators"] = {"quote": [quote]}
        if interval == "1d" and len(rows):
            result["indicators"]["adjclose"] = [{"adjclose": list(quote["close"])}]
        return Response(200, {"chart": {"result": [result], "error": None}})
