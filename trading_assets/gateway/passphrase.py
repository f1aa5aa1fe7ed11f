"""The webhook's shared secret, cached, re-read for rotation, compared in constant time.

TradingView cannot sign a request or send a header, so the alert body carries a
`passphrase` field. The configured value comes from a `fetch` callable (the local
setting, or the Secrets Manager key in aws mode): read at startup, then again once
`ttl_seconds` have passed. A body whose passphrase does not match forces one early
re-read, at most every `recheck_seconds`, so an alert sent with a just-rotated
passphrase is accepted at once instead of after the TTL, and a stream of wrong guesses
costs at most one fetch per `recheck_seconds`.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class PassphraseUnavailable(RuntimeError):
    """The configured passphrase cannot be read (or is empty): the gateway answers 503, so
    TradingView retries, rather than refusing a good alert with a 401 it would not retry."""


def _bytes(text: str) -> bytes:
    # surrogatepass: a JSON string may hold a lone surrogate ("\ud800"); it must compare, not crash
    return text.encode("utf-8", "surrogatepass")


class PassphraseCache:
    """The configured passphrase behind a TTL; `matches(candidate)` is the only check."""

    def __init__(self, fetch: Callable[[], str], ttl_seconds: float = 60.0, recheck_seconds: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds < 0 or recheck_seconds < 0:
            raise ValueError("ttl_seconds and recheck_seconds must be >= 0")
        self._fetch = fetch
        self.ttl_seconds = float(ttl_seconds)
        self.recheck_seconds = float(recheck_seconds)
        self._clock = clock
        self._value: bytes | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the value
        return f"PassphraseCache(ttl_seconds={self.ttl_seconds:g}, recheck_seconds={self.recheck_seconds:g})"

    def _refresh(self, now: float) -> bytes:
        try:
            value = self._fetch()
        except Exception as exc:
            if self._value is not None:
                log.warning("the webhook passphrase could not be re-read (%s); keeping the one read %.0f s ago",
                            type(exc).__name__, now - self._fetched_at)
                self._fetched_at = now - self.ttl_seconds + min(self.ttl_seconds, 30.0)  # retry in 30 s
                return self._value
            raise PassphraseUnavailable(f"the webhook passphrase cannot be read: {exc}") from exc
        if not isinstance(value, str) or not value:
            raise PassphraseUnavailable("the webhook passphrase is empty: set it (an empty one would accept "
                                        "an empty passphrase)")
        self._value, self._fetched_at = _bytes(value), now
        return self._value

    def _current(self) -> bytes:
        now = self._clock()
        if self._value is None or now - self._fetched_at >= self.ttl_seconds:
            return self._refresh(now)
        return self._value

    def load(self) -> None:
        """Read it now (startup, /health); raises PassphraseUnavailable."""
        with self._lock:
            self._current()

    def matches(self, candidate: object) -> bool:
        """True if `candidate` is a string equal to the configured passphrase (constant-time
        compare). A mismatch re-reads once if the copy is older than `recheck_seconds`.
        Raises PassphraseUnavailable when there is nothing to compare with."""
        if not isinstance(candidate, str) or not candidate:
            return False
        given = _bytes(candidate)
        with self._lock:
            if hmac.compare_digest(given, self._current()):
                return True
            now = self._clock()
            if now - self._fetched_at < self.recheck_seconds:
                return False
            return hmac.compare_digest(given, self._refresh(now))
