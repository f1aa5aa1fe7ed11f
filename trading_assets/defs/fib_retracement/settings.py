"""The IG Fibonacci flow's configuration (resource key `fib_retracement`), editable in the
launchpad: what the seed's Step Function read from its configuration (which IG markets, at
what size and in what currency) and the strategy's parameters. Every value is checked when
the resource is built, so a bad one fails before anything is fetched or ordered."""

import re

import dagster as dg
from pydantic import Field, field_validator, model_validator

from trading_assets.core.strategies import fib_retracement as strategy

# IG epics: dot-separated upper-case parts, e.g. CS.D.EURUSD.MINI.IP, IX.D.FTSE.DAILY.IP
EPIC = re.compile(r"^[A-Z0-9_]+(\.[A-Z0-9_]+){2,}$")


class FibInstrument(dg.Config):
    """One IG market: its epic, the deal size (IG's contracts or lots) and the account
    currency deals are booked in."""

    epic: str
    size: float = 1.0
    currency: str = "USD"

    @field_validator("epic")
    @classmethod
    def _epic(cls, value: str) -> str:
        if not EPIC.match(value):
            raise ValueError(f"epic {value!r} is not an IG epic like CS.D.EURUSD.MINI.IP")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"size must be > 0, got {value!r}")
        return value

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f"currency must be a 3-letter ISO code like USD, got {value!r}")
        return value


class FibRetracementSettings(dg.ConfigurableResource):
    """Which IG markets the hourly tick trades and the swing/retracement rule's parameters
    (see core/strategies/fib_retracement.py: `Params` checks them)."""

    instruments: list[FibInstrument] = Field(
        default_factory=lambda: [FibInstrument(epic="CS.D.EURUSD.MINI.IP", size=1.0, currency="USD")])
    lookback: int = 40
    window: int = 3
    levels: list[float] = Field(default_factory=lambda: [0.382, 0.5, 0.618])
    tolerance: float = 0.03
    fresh_bars: int = 1
    take_profit_ratio: float = 0.0
    stop_loss_ratio: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> "FibRetracementSettings":
        epics = [i.epic for i in self.instruments]
        if not epics:
            raise ValueError("instruments: list at least one IG market")
        if len(set(epics)) != len(epics):
            raise ValueError(f"instruments: each epic once, got {epics}")
        self.params()  # the strategy's own checks, with its messages
        return self

    def params(self) -> strategy.Params:
        return strategy.Params(lookback=self.lookback, window=self.window, levels=tuple(self.levels),
                               tolerance=self.tolerance, fresh_bars=self.fresh_bars,
                               take_profit_ratio=self.take_profit_ratio, stop_loss_ratio=self.stop_loss_ratio)

    def instrument(self, epic: str) -> FibInstrument:
        for item in self.instruments:
            if item.epic == epic:
                return item
        raise KeyError(f"{epic} is not a configured instrument ({', '.join(i.epic for i in self.instruments)})")
