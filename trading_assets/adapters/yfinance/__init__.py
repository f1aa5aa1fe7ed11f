"""Yahoo Finance bars through yfinance (no credentials)."""
