"""The embedded SQLite ledger (intents, fills, equity) and the SQLite helpers it shares."""
