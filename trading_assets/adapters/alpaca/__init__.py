"""Alpaca (US equities): the broker over alpaca-py's TradingClient and its stock bars."""
