"""The gateway's paths and limits, importable without FastAPI (the `alert` client uses them)."""

WEBHOOK_PATH = "/webhooks/tradingview"
HEALTH_PATH = "/health"
MAX_BODY_BYTES = 64 * 1024  # alerts are a few hundred bytes
