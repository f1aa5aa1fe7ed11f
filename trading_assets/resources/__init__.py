"""Dagster resources, between the adapters and the flows: brokers, market data, ledgers,
IO managers and trading settings. Which ones a deployment uses is decided in
`trading_assets.defs.resources` by `TRADING_ENV`."""
