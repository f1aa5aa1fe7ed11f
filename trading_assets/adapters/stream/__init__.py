"""The price stream's own storage and offline source: `store.StreamStore` (raw ticks,
closed minute bars and a heartbeat in SQLite) and `replay.ReplayPriceStream` (a
`PriceStream` over the bundled replay data)."""
