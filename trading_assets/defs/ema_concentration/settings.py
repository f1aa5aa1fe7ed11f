"""The EMA concentration flow's parameters, editable in the launchpad (resource key
`ema_concentration`), shared by the live tick and its backtest."""

import dagster as dg


class EmaConcentrationSettings(dg.ConfigurableResource):
    """Concentrate into `target` while its fast EMA is above the slow one (hourly closes);
    `watchlist` symbols are priced and signalled in the same frame."""

    target: str = "TQQQ"
    fast: int = 10
    slow: int = 20
    buying_power_fraction: float = 0.95
    watchlist: list[str] = []  # noqa: RUF012 (pydantic copies field defaults)
    lookback_sessions: int = 8
