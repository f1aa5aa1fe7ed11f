"""Opt-in tests against real paper/demo broker accounts (`pytest -m live`); skipped
without credentials, and always skipped when `CI` is set."""
