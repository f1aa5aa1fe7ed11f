"""The embedded paper broker: a simulated cash account in SQLite (the default everywhere)."""
