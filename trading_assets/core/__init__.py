"""Pure trading domain: no Dagster, no network, no adapters.

Everything here is a function or small state machine over frames and plain data, so the
backtester and the live Dagster assets call exactly the same code.
"""
