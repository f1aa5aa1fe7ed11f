"""`FakeLightstreamer` with an outage switch: `drop()` closes every open stream from the
server side and refuses new WebSocket connections until `restore()`, like a Lightstreamer
server or a network path going away for a while."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from trading_assets_tests.fakes.ig import FakeLightstreamer


class OutageLightstreamer(FakeLightstreamer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.down = threading.Event()
        self.subscriptions = 0  # successful `add`s, across connections
        self._count_lock = threading.Lock()

    async def _ws(self, request: Any) -> Any:
        from aiohttp import web

        if self.down.is_set():
            raise web.HTTPServiceUnavailable(text="outage")
        return await super()._ws(request)

    async def _handle(self, ws: Any, name: str, p: dict[str, str]) -> None:
        await super()._handle(ws, name, p)
        if name == "control" and p.get("LS_op") == "add":
            with self._count_lock:
                self.subscriptions += 1

    def drop(self) -> None:
        """Start an outage: close every stream, refuse reconnects."""
        self.down.set()

        async def close_all() -> None:
            for ws in list(self._sockets):
                await ws.close()

        asyncio.run_coroutine_threadsafe(close_all(), self._loop).result(10)

    def restore(self) -> None:
        self.down.clear()
