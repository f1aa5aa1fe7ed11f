"""The Dagster layer, one module per domain; loaded by `dg.load_from_defs_folder`.

Holds no trading logic: assets read inputs, call `trading_assets.core`, call a resource
and return a frame with metadata.
"""
