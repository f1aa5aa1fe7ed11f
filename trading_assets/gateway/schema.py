"""The webhook's request and answers as OpenAPI, for the page at /docs.

The body is validated by `adapters.tradingview.alerts.parse_tradingview_alert` (field by
field, naming the first bad one), not by these schemas: they document the two shapes
that validator takes, and the answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from trading_assets.adapters.tradingview.alerts import DMI_INDICATOR, TREND_INDICATOR


class AlertAnswer(BaseModel):
    """200: the alert is stored durably (accepted), or was stored before (duplicate)."""

    status: Literal["accepted", "duplicate"]
    alert_id: str = Field(description="The alert's id, derived from its content (passphrase excluded): "
                                      "a re-delivery has the same id")


class RejectedAnswer(BaseModel):
    """4xx: nothing was stored. TradingView does not retry a 4xx."""

    status: Literal["rejected", "unauthorized"]
    error: str = Field(description="What is wrong, naming the field")
    field: str | None = Field(description="The offending field as a dotted path (e.g. signal.trigger), if any")


class UnavailableAnswer(BaseModel):
    """503: the alert could not be stored (or the passphrase read); nothing was
    acknowledged. TradingView retries a 5xx (after 5 s, up to 3 times); the re-delivery
    has the same alert id, so it is stored once."""

    status: Literal["unavailable"]
    error: str
    retry: bool = True


class HealthAnswer(BaseModel):
    status: Literal["ok"]
    queue: str = Field(description="The alert queue's kind (sqlite locally, sqs in aws mode)")


_PRICE = {"oneOf": [{"type": "number"}, {"type": "string", "description": "a number as text, e.g. \"24538.75\""}],
          "description": "A finite number, or its text (a quoted {{close}} placeholder, filled)"}


def _envelope(title: str, indicator: str, actions: list[str], signal: dict[str, Any], timeframe: str,
              description: str) -> dict[str, Any]:
    text = {"type": "string", "minLength": 1}
    return {
        "title": title,
        "description": description,
        "type": "object",
        "required": ["passphrase", "action", "indicator", "signal", "market_data", "price_data"],
        "properties": {
            "passphrase": {"type": "string", "description": "The shared secret (TRADINGVIEW_PASSPHRASE); "
                                                            "never stored"},
            "action": {"type": "string", "enum": actions},
            "indicator": {"type": "string", "enum": [indicator]},
            "signal": signal,
            "market_data": {
                "type": "object", "required": ["symbol", "exchange", "timeframe", "timestamp", "timenow"],
                "properties": {
                    "symbol": {**text, "description": "{{ticker}}, e.g. MNQ1! (the queue group: one symbol's "
                                                      "alerts stay in order)"},
                    "exchange": {**text, "description": "{{exchange}}"},
                    "timeframe": {**text, "description": f"{{{{interval}}}}, e.g. {timeframe}"},
                    "timestamp": {**text, "format": "date-time", "description": "{{time}}: the bar's open, UTC"},
                    "timenow": {**text, "format": "date-time", "description": "{{timenow}}: when it fired, UTC"},
                },
            },
            "price_data": {
                "type": "object", "required": ["open", "high", "low", "close", "volume"],
                "properties": {k: {**_PRICE, "description": f"{{{{{k}}}}}"}
                               for k in ("open", "high", "low", "close", "volume")},
            },
        },
    }


TREND_ALERT = _envelope(
    "TrendValidatorAlert", TREND_INDICATOR, ["LONG_ENTRY", "SHORT_ENTRY"],
    {"type": "object", "required": ["type", "direction", "trigger"], "properties": {
        "type": {"type": "string", "enum": ["ENTRY"]},
        "direction": {"type": "string", "enum": ["LONG", "SHORT"], "description": "LONG with LONG_ENTRY"},
        "trigger": {"type": "string", "enum": ["COLOR_CHANGE_BLUE", "COLOR_CHANGE_RED"],
                    "description": "COLOR_CHANGE_BLUE with LONG_ENTRY, COLOR_CHANGE_RED with SHORT_ENTRY"}}},
    "10", "A Trend Validator colour flip: enter (or flip to) the new direction.")

DI_CROSS_ALERT = _envelope(
    "DICrossAlert", DMI_INDICATOR, ["DI_CROSS"],
    {"type": "object", "required": ["type", "direction", "trigger"], "properties": {
        "type": {"type": "string", "enum": ["DI_CROSS"]},
        "direction": {"type": "string", "enum": ["PLUS_OVER_MINUS", "MINUS_OVER_PLUS"]},
        "trigger": {"type": "string", "enum": ["DI_PLUS_CROSS_ABOVE", "DI_MINUS_CROSS_ABOVE"],
                    "description": "DI_PLUS_CROSS_ABOVE with PLUS_OVER_MINUS, DI_MINUS_CROSS_ABOVE with "
                                   "MINUS_OVER_PLUS"}}},
    "15", "A DMI DI+/DI- cross: exits a position on the opposite cross, re-enters while waiting.")


def request_body(examples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The operation's requestBody: the same JSON under application/json and text/plain
    (TradingView sends text/plain when the message is not exactly JSON)."""
    schema = {"oneOf": [TREND_ALERT, DI_CROSS_ALERT]}
    shown = {name: {"value": {"passphrase": "your-passphrase", **alert}} for name, alert in examples.items()}
    return {
        "required": True,
        "description": "The alert message (≤ 64 KiB): a Trend Validator entry or a DMI cross, with the passphrase.",
        "content": {
            "application/json": {"schema": schema, "examples": shown},
            "text/plain": {"schema": {"type": "string", "description": "the same JSON, as text"}},
        },
    }
