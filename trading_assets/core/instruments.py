"""TradingView tickers -> broker instruments for futures.

TradingView alerts name continuous contracts (`MNQ1!`: the front Micro E-mini Nasdaq-100
future); a broker trades one dated contract (Tradovate `MNQZ6`: December 2026). CME
equity-index futures are quarterly (March H, June M, September U, December Z) and expire
on the third Friday of the month; volume rolls to the next contract eight days before
(the Thursday of the week before), which is when `front_month` moves on.

A mapping value `ROOT@front` resolves to the front month on the alert's date; any other
value is used as it is (a fixed contract, or a stock symbol).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

QUARTERLY = {3: "H", 6: "M", 9: "U", 12: "Z"}
ROLL_DAYS_BEFORE_EXPIRY = 8
FRONT = "@front"


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def front_month(root: str, on: date) -> str:
    """The quarterly contract that is front on `on`, e.g. ("MNQ", 2026-12-02) -> "MNQZ6"
    and ("MNQ", 2026-12-10) -> "MNQH7" (rolled 8 days before the 2026-12-18 expiry)."""
    year, month = on.year, on.month
    for _ in range(6):
        quarter = next((m for m in sorted(QUARTERLY) if m >= month), None)
        if quarter is None:
            year, month = year + 1, 1
            continue
        if on < third_friday(year, quarter) - timedelta(days=ROLL_DAYS_BEFORE_EXPIRY):
            return f"{root}{QUARTERLY[quarter]}{year % 10}"
        month = quarter + 1
        if month > 12:
            year, month = year + 1, 1
    raise AssertionError("unreachable: a quarterly contract is always within six months")


def resolve_instrument(ticker: str, mapping: Mapping[str, str], on: date) -> str | None:
    """The broker instrument for a TradingView `ticker` on `on`, None if unmapped."""
    target = mapping.get(ticker)
    if target is None:
        return None
    if target.endswith(FRONT):
        return front_month(target.removesuffix(FRONT), on)
    return target
