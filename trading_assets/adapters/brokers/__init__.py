"""Broker adapters implementing trading_assets.core.ports.Broker."""
