"""The price stream's store (`adapters.stream.store.StreamStore`) as a Dagster resource:
what the knn_shadow bars asset reads its day file from and the silence sensor reads the
heartbeat from."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

if TYPE_CHECKING:
    from trading_assets.adapters.stream.store import StreamStore


class StreamStoreResource(dg.ConfigurableResource):
    """`get()` returns the StreamStore under `root` (default `<TRADING_DATA_DIR>/stream`,
    where `python -m trading_assets stream` writes). `silence_minutes`: how long without a
    tick, during the FX week, is a silent stream (the silence sensor tells)."""

    root: str | None = None
    silence_minutes: float = 5.0

    def get(self) -> StreamStore:
        from trading_assets import settings
        from trading_assets.adapters.stream.store import StreamStore

        return StreamStore(self.root if self.root else settings.data_dir() / "stream")
