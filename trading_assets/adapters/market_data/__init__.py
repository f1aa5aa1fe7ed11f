"""Market data behind `trading_assets.core.ports.MarketData`: replay (embedded), yfinance,
Twelve Data, Alpaca bars, IG prices. All return the `core.bars` frame schema."""
