"""Loopback fake of Twelve Data's `/time_series` (wire spec section 4).

Keeps bars per (symbol, interval), renders `datetime` in the requested time zone
(`Exchange` = the symbol's exchange zone), applies `start_date`/`end_date` in that zone,
`outputsize` (most recent first) and `order`. Counts credits per minute and per day
against a clock the test controls, so the real per-minute vs daily 429s happen. Errors
come as `{"code","message","status":"error"}` with HTTP 200 or HTTP = code (`error_http`).

Faults: `minute_limit`, `daily_limit`, `error` (any code/message, in HTTP 200 by
default), `non_json`, `empty_body`, `server_error`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from trading_assets_tests.fakes.alpaca import QuickStopServer
from trading_assets_tests.fakes.base import Request, Response, route

API_KEY = "td-fake-key"

_INTERVALS = {"1min", "5min", "15min", "30min", "45min", "1h", "2h", "4h", "1day", "1week"}


class FakeTwelveData(QuickStopServer):
    """Twelve Data's time series endpoint with real credit accounting."""

    def __init__(
        self,
        api_key: str = API_KEY,
        credits_per_minute: int = 8,
        credits_per_day: int = 800,
        error_http: str = "200",  # "200": errors inside HTTP 200; "code": HTTP = code
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.credits_per_minute = credits_per_minute
        self.credits_per_day = credits_per_day
        self.error_http = error_http
        self.clock = clock
        self.bars: dict[tuple[str, str], pd.DataFrame] = {}
        self.exchange_tz: dict[str, str] = {}
        self._minute: tuple[int, int] = (-1, 0)
        self._day: tuple[int, int] = (-1, 0)

    def add_bars(self, symbol: str, interval: str, frame: pd.DataFrame, exchange_tz: str = "America/New_York") -> None:
        """`frame`: index of bar starts (tz-aware; daily: the session dates), OHLC(V)."""
        self.bars[(symbol, interval)] = frame.set_axis(pd.DatetimeIndex(frame.index).tz_convert("UTC")).sort_index()
        self.exchange_tz[symbol] = exchange_tz

    def series_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/time_series"]

    # -- faults
    def fault_minute_limit(self, times: int = 1) -> None:
        self.faults.add("minute_limit", times=times)

    def fault_daily_limit(self) -> None:
        self.faults.add("daily_limit")

    def fault_error(self, code: int, message: str, http: int = 200) -> None:
        self.faults.add("error", code=code, message=message, http=http)

    def fault_non_json(self, status: int = 200) -> None:
        self.faults.add("non_json", status=status)

    def fault_empty_body(self) -> None:
        self.faults.add("empty_body")

    def fault_server_error(self) -> None:
        self.faults.add("server_error")

    # -- helpers
    def _error(self, code: int, message: str, http: int | None = None) -> Response:
        status = http if http is not None else (200 if self.error_http == "200" else code)
        return Response(status, {"code": code, "message": message, "status": "error"})

    def _spend(self, credits: int) -> Response | None:
        now = self.clock()
        minute, day = int(now // 60), int(now // 86_400)
        used_min = (self._minute[1] if self._minute[0] == minute else 0) + credits
        used_day = (self._day[1] if self._day[0] == day else 0) + credits
        if used_day > self.credits_per_day:
            return self._error(
                429,
                (
                    f"You have run out of API credits for the day. {used_day} API credits were "
                    f"used, with the current limit being {self.credits_per_day}. Wait for the next day or "
                    "consider switching to a higher tier plan at https://twelvedata.com/pricing"
                ),
            )
        if used_min > self.credits_per_minute:
            return self._error(
                429,
                (
                    f"You have run out of API credits for the current minute. {used_min} API "
                    f"credits were used, with the current limit being {self.credits_per_minute}. "
                    "Wait for the next minute or consider switching to a higher tier plan at "
                    "https://twelvedata.com/pricing"
                ),
            )
        self._minute, self._day = (minute, used_min), (day, used_day)
        return None

    @route("GET", r"/time_series")
    def time_series(self, req: Request) -> Response:
        q = req.query
        auth = req.headers.get("authorization", "")
        key = auth.removeprefix("apikey ").strip() if auth else q.get("apikey", "")
        if key != self.api_key:
            return self._error(
                401,
                "**apikey** parameter is incorrect or not specified. You can "
                "get your free API key instantly following this link: "
                "https://twelvedata.com/pricing",
            )
        fault = self.faults.take(req)
        if fault is not None:
            if fault.kind == "minute_limit":
                return self._error(
                    429,
                    "You have run out of API credits for the current minute. "
                    "9 API credits were used, with the current limit being 8.",
                )
            if fault.kind == "daily_limit":
                return self._error(
                    429,
                    "You have run out of API credits for the day. 801 API "
                    "credits were used, with the current limit being 800.",
                )
            if fault.kind == "error":
                p = fault.params
                return self._error(int(p["code"]), str(p["message"]), http=int(p["http"]))
            if fault.kind == "non_json":
                return Response(
                    int(fault.params["status"]),
                    "<html>cloudflare: 522</html>",
                    headers={"Content-Type": "text/html"},
                )
            if fault.kind == "empty_body":
                return Response(200, b"")
            return Response(500, "Internal Server Error")
        symbol, interval = q.get("symbol", ""), q.get("interval", "")
        if not symbol or interval not in _INTERVALS:
            return self._error(400, "**interval** is required or is not valid")
        limited = self._spend(len(symbol.split(",")))
        if limited is not None:
            return limited
        frame = self.bars.get((symbol, interval))
        if frame is None and not any(s == symbol for s, _ in self.bars):
            return self._error(
                404,
                f"**symbol** not found: {symbol}. Please specify it correctly according to API Documentation.",
            )
        exchange_tz = self.exchange_tz.get(symbol, "America/New_York")
        tz_name = q.get("timezone", "Exchange")
        tz = exchange_tz if tz_name == "Exchange" else tz_name
        daily = interval in ("1day", "1week")
        rows = frame if frame is not None else pd.DataFrame()
        if not rows.empty:
            local = rows.index if daily else rows.index.tz_convert(tz)
            naive = local.tz_localize(None)
            keep = pd.Series(True, index=rows.index)
            if q.get("start_date"):
                keep &= naive >= pd.Timestamp(q["start_date"])
            if q.get("end_date"):
                end = pd.Timestamp(q["end_date"])
                keep &= (naive.normalize() <= end) if daily else (naive <= end)  # inclusive
            rows = rows[keep.to_numpy()]
            naive = naive[keep.to_numpy()]
        if rows.empty:
            return self._error(
                400,
                "No data is available on the specified dates. Try setting different start/end dates.",
            )
        fmt = "%Y-%m-%d" if daily else "%Y-%m-%d %H:%M:%S"
        values = []
        for stamp, (_, row) in zip(naive, rows.iterrows(), strict=True):
            v = {
                "datetime": stamp.strftime(fmt),
                "open": f"{row['open']:.5f}",
                "high": f"{row['high']:.5f}",
                "low": f"{row['low']:.5f}",
                "close": f"{row['close']:.5f}",
            }
            if "volume" in row and not pd.isna(row["volume"]):
                v["volume"] = str(int(row["volume"]))
            values.append(v)
        values.reverse()  # newest first, then cut to outputsize
        values = values[: int(q.get("outputsize") or 30)]
        if q.get("order", "desc").lower() == "asc":
            values.reverse()
        meta: dict[str, Any] = {
            "symbol": symbol,
            "interval": interval,
            "currency": "USD",
            "exchange_timezone": exchange_tz,
            "exchange": "NASDAQ",
            "mic_code": "XNGS",
            "type": "Common Stock",
        }
        return Response(200, {"meta": meta, "values": values, "status": "ok"})
