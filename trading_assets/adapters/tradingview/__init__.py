"""TradingView: the alert bodies its webhooks post, parsed into strategy events."""
