"""Market-data adapters implementing trading_assets.core.ports.MarketData."""
