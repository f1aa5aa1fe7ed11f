"""Ledgers behind `trading_assets.core.ports.Ledger`: SQLite (embedded), DynamoDB."""
