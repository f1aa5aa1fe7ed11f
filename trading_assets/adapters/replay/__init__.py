"""Offline market data replayed from the bundled real return tapes (the default)."""
