"""The sample TradingView alerts bundled as package data (`trading_assets/data/
tradingview_alerts.json`): one of each shape for MNQ1!, in a sensible trading order."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def _load() -> dict[str, dict[str, Any]]:
    text = resources.files("trading_assets.data").joinpath("tradingview_alerts.json").read_text(encoding="utf-8")
    return json.loads(text)["alerts"]


def sample_names() -> list[str]:
    return list(_load())


def sample(name: str) -> dict[str, Any]:
    """A fresh copy of one sample (no passphrase in it); KeyError naming the choices."""
    alerts = _load()
    if name not in alerts:
        raise KeyError(f"no sample alert {name!r}; samples are {', '.join(alerts)}")
    return copy.deepcopy(alerts[name])


def samples() -> dict[str, dict[str, Any]]:
    return {name: sample(name) for name in _load()}
