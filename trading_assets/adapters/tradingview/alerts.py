"""TradingView alert bodies -> trend_dmi events (`TrendFlip`, `DICross`).

TradingView posts what the alert's message template says, so the body is validated
field by field and a bad one is refused naming the field (`signal.trigger: ...`), never
guessed at. Shapes:
- Trend Validator entries, as in the flow's seed: `"indicator": "Trend_Validator"`,
  `"action": "LONG_ENTRY" | "SHORT_ENTRY"`, `signal` {type ENTRY, direction LONG/SHORT,
  trigger COLOR_CHANGE_BLUE/RED}, `market_data` {symbol, exchange, timeframe,
  timestamp, timenow}, `price_data` {open, high, low, close, volume}.
- DI crosses (the seed shows only the trend alerts): same envelope,
  `"indicator": "DMI"`, `"action": "DI_CROSS"`,
  `"signal": {"type": "DI_CROSS", "direction": "PLUS_OVER_MINUS" | "MINUS_OVER_PLUS",
  "trigger": "DI_PLUS_CROSS_ABOVE" | "DI_MINUS_CROSS_ABOVE"}`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trading_assets.core.strategies.trend_dmi import CrossDirection, DICross, Event, TrendColor, TrendFlip

TREND_INDICATOR = "Trend_Validator"
DMI_INDICATOR = "DMI"

_FLIP_SHAPES = {
    # action -> (signal.direction, signal.trigger, colour)
    "LONG_ENTRY": ("LONG", "COLOR_CHANGE_BLUE", TrendColor.BLUE),
    "SHORT_ENTRY": ("SHORT", "COLOR_CHANGE_RED", TrendColor.RED),
}
_CROSS_SHAPES = {
    # signal.direction -> (signal.trigger, direction)
    "PLUS_OVER_MINUS": ("DI_PLUS_CROSS_ABOVE", CrossDirection.PLUS_OVER_MINUS),
    "MINUS_OVER_PLUS": ("DI_MINUS_CROSS_ABOVE", CrossDirection.MINUS_OVER_PLUS),
}


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _section(payload: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = payload.get(name)
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected an object, got {value!r}")
    return value


def _text(section: Mapping[str, Any], path: str, key: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}.{key}: expected a non-empty string, got {value!r}")
    if "{{" in value:
        raise ValueError(f"{path}.{key}: unfilled TradingView placeholder {value!r}")
    return value.strip()


def _choice(section: Mapping[str, Any], path: str, key: str, allowed) -> str:
    value = section.get(key)
    if not isinstance(value, str) or value not in allowed:  # a list or object is refused, not a TypeError
        raise ValueError(f"{_where(path, key)}: expected one of {sorted(allowed)}, got {value!r}")
    return value


def _time(section: Mapping[str, Any], path: str, key: str) -> datetime:
    raw = _text(section, path, key)
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{path}.{key}: not an ISO-8601 time: {raw!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"{path}.{key}: time has no timezone: {raw!r} (TradingView sends ...Z)")
    return value


def _number(section: Mapping[str, Any], path: str, key: str) -> float:
    raw = section.get(key)
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"{path}.{key}: expected a number, got {raw!r}")
    if isinstance(raw, str) and "{{" in raw:
        raise ValueError(f"{path}.{key}: unfilled TradingView placeholder {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
        raise ValueError(f"{path}.{key}: expected a number, got {str(raw)[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}.{key}: expected a finite number, got {raw!r}")
    return value


def alert_content_id(payload: Mapping[str, Any]) -> str:
    """A stable id for an alert body: the same content (passphrase aside) gives the same id,
    so a re-delivered alert is recognised as a duplicate."""
    body = {k: v for k, v in payload.items() if k != "passphrase"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return "tv-" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def parse_tradingview_alert(payload: Mapping[str, Any], event_id: str | None = None) -> Event:
    """Validate one alert body (seed-001 shape, or the DI-cross shape above) into an event.

    Raises ValueError naming the first bad field (e.g. `signal.trigger: ...`). Extra
    keys (a passphrase, an alert id) are ignored here; the gateway checks those.
    `event_id` defaults to `alert_content_id(payload)`; pass the gateway's alert id
    (its dedupe key) to tie the event to the stored alert.
    """
    if not isinstance(payload, Mapping):
        raise ValueError(f"alert: expected a JSON object, got {type(payload).__name__}")
    indicator = _choice(payload, "", "indicator", {TREND_INDICATOR, DMI_INDICATOR})
    signal = _section(payload, "signal")
    market = _section(payload, "market_data")
    prices = _section(payload, "price_data")

    symbol = _text(market, "market_data", "symbol")
    exchange = _text(market, "market_data", "exchange")
    timeframe = _text(market, "market_data", "timeframe")
    bar_time = _time(market, "market_data", "timestamp")
    fired_at = _time(market, "market_data", "timenow")
    values = {k: _number(prices, "price_data", k) for k in ("open", "high", "low", "close")}
    values["volume"] = _number(prices, "price_data", "volume")
    for k in ("open", "high", "low", "close"):
        if values[k] <= 0:
            raise ValueError(f"price_data.{k}: expected a positive price, got {values[k]!r}")
    if values["volume"] < 0:
        raise ValueError(f"price_data.volume: expected >= 0, got {values['volume']!r}")
    if values["high"] < max(values["open"], values["close"], values["low"]):
        raise ValueError(f"price_data.high: {values['high']} is below open/close/low")
    if values["low"] > min(values["open"], values["close"]):
        raise ValueError(f"price_data.low: {values['low']} is above open/close")
    common = dict(
        symbol=symbol, at=fired_at, price=values["close"], bar_time=bar_time,
        timeframe=timeframe, exchange=exchange,
        event_id=event_id if event_id is not None else alert_content_id(payload),
    )

    if indicator == TREND_INDICATOR:
        action = _choice(payload, "", "action", set(_FLIP_SHAPES))
        direction, trigger, color = _FLIP_SHAPES[action]
        _choice(signal, "signal", "type", {"ENTRY"})
        _choice(signal, "signal", "direction", {direction})
        _choice(signal, "signal", "trigger", {trigger})
        return TrendFlip(color=color, **common)

    _choice(payload, "", "action", {"DI_CROSS"})
    _choice(signal, "signal", "type", {"DI_CROSS"})
    name = _choice(signal, "signal", "direction", set(_CROSS_SHAPES))
    trigger, direction = _CROSS_SHAPES[name]
    _choice(signal, "signal", "trigger", {trigger})
    return DICross(direction=direction, **common)
