"""The TradingView webhook gateway: `POST /webhooks/tradingview` stores each alert in the
alert queue (SQLite locally, SQS FIFO on AWS) and only then answers 200; `GET /health`.

- `create_app(queue, passphrase)` (app.py): the FastAPI app over any
  `core.messaging.AlertQueue`; `passphrase` returns the configured shared secret.
- `serve(app, host, port)` / `start_in_thread(app)` (server.py): uvicorn.
- `python -m trading_assets gateway` builds the queue and the passphrase source of
  `TRADING_ENV` (the same queue the Dagster definitions read) and serves; `python -m
  trading_assets alert` sends the bundled sample alerts (samples.py) to it.

Answers: 200 accepted / duplicate (stored now / stored before: same content, same alert
id), 401 passphrase, 413 over 64 KiB, 422 malformed or invalid (naming the field), 503
not stored (TradingView retries a 5xx). Nothing is stored for a 4xx. What is stored:
envelope.py. This package never imports Dagster (an import-linter contract): it is a
small process that must answer within TradingView's 3 s.
"""

from __future__ import annotations

from typing import Any

from trading_assets.gateway.constants import HEALTH_PATH, MAX_BODY_BYTES, WEBHOOK_PATH

__all__ = ["HEALTH_PATH", "MAX_BODY_BYTES", "WEBHOOK_PATH", "RunningGateway", "create_app", "serve",
           "start_in_thread"]

_LAZY = {"create_app": "app", "RunningGateway": "server", "serve": "server", "start_in_thread": "server"}


def __getattr__(name: str) -> Any:
    """The app and the server on first use: `alert` (the client) needs neither FastAPI nor uvicorn."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"trading_assets.gateway.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'trading_assets.gateway' has no attribute {name!r}")
