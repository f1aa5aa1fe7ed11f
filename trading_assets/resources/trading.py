"""Settings every order-placing flow reads."""

from __future__ import annotations

import dagster as dg


class TradingSettings(dg.ConfigurableResource):
    """How far back a tick may still trade.

    max_tick_age_minutes: only place orders for a tick whose bar closed at most this long
    ago; older ticks (backfills, late reruns) compute signals but order nothing. None
    disables the check (the local default, so `make run` can replay yesterday). The kill
    switch is not here: it is `TRADING_KILL_SWITCH`, read at call time
    (`trading_assets.settings.kill_switch_engaged`).
    """

    max_tick_age_minutes: int | None = None
