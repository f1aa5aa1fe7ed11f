"""The TradingView alert flow's configuration (resource key `trend_dmi`), editable in the
launchpad: which TradingView tickers trade which broker instrument, how many, and how old
an alert may be."""

import dagster as dg
from pydantic import field_validator


class TrendDmiSettings(dg.ConfigurableResource):
    """`instruments` maps a TradingView ticker to the broker's instrument: `ROOT@front` is
    the CME quarterly front month on the alert's date (MNQ1! -> MNQZ6), anything else is
    used as it is. An alert for an unmapped ticker is recorded and ignored, with the reason.
    `quantity` is contracts (or shares) per entry, per ticker (`default_quantity` else)."""

    instruments: dict[str, str] = {"MNQ1!": "MNQ@front"}  # noqa: RUF012 (pydantic copies defaults)
    quantity: dict[str, float] = {}  # noqa: RUF012
    default_quantity: float = 1.0
    # An alert older than this when processed trades nothing (recorded as too old): a
    # trade placed long after its alert is not the trade the alert meant.
    max_alert_age_seconds: int = 300

    @field_validator("quantity")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not v > 0}
        if bad:
            raise ValueError(f"quantity must be > 0 for every ticker, got {bad}")
        return value

    def quantity_for(self, ticker: str) -> float:
        return float(self.quantity.get(ticker, self.default_quantity))
