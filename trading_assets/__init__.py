"""trading_assets: automated-trading flows as Dagster software-defined assets."""

__version__ = "0.1.0"
