"""Brokers behind `trading_assets.core.ports.Broker`: paper (embedded), Alpaca, IG, Tradovate."""
