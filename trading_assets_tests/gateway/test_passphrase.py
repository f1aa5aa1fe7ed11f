"""The passphrase cache: TTL, early re-read after a mismatch (rotation), failures."""

from __future__ import annotations

import pytest

from trading_assets.gateway.passphrase import PassphraseCache, PassphraseUnavailable


class Source:
    def __init__(self, value: str) -> None:
        self.value, self.calls, self.down = value, 0, False

    def __call__(self) -> str:
        self.calls += 1
        if self.down:
            raise ConnectionError("unreachable")
        return self.value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_read_once_then_on_the_ttl():
    source, clock = Source("a"), Clock()
    cache = PassphraseCache(source, ttl_seconds=60, recheck_seconds=5, clock=clock)
    assert cache.matches("a") and cache.matches("a") and source.calls == 1
    clock.now += 61
    assert cache.matches("a") and source.calls == 2


def test_a_mismatch_rereads_at_most_every_recheck_seconds():
    source, clock = Source("old"), Clock()
    cache = PassphraseCache(source, ttl_seconds=3600, recheck_seconds=5, clock=clock)
    cache.load()
    source.value = "new"
    assert not cache.matches("new")  # read just now: no re-read yet
    for _ in range(100):
        assert not cache.matches("guess")
    assert source.calls == 1, "wrong guesses must not hammer the secrets store"
    clock.now += 5
    assert cache.matches("new") and source.calls == 2
    assert not cache.matches("old")


def test_non_strings_and_empty_never_match():
    cache = PassphraseCache(Source("a"))
    for bad in [None, 1, True, ["a"], {"a": 1}, b"a", ""]:
        assert not cache.matches(bad)
    assert not cache.matches("\ud800") and PassphraseCache(Source("\ud800")).matches("\ud800")


def test_a_failed_reread_keeps_the_copy_and_no_copy_is_unavailable():
    source, clock = Source("a"), Clock()
    cache = PassphraseCache(source, ttl_seconds=60, clock=clock)
    source.down = True
    with pytest.raises(PassphraseUnavailable):
        cache.matches("a")
    source.down = False
    assert cache.matches("a")
    source.down, clock.now = True, clock.now + 61
    assert cache.matches("a"), "a passing failure keeps serving the cached passphrase"


def test_an_empty_configured_passphrase_is_unavailable_not_open():
    empty = PassphraseCache(Source(""))
    assert not empty.matches("")
    with pytest.raises(PassphraseUnavailable, match="empty"):
        empty.matches("anything")
    with pytest.raises(PassphraseUnavailable, match="empty"):
        empty.load()
    cache = PassphraseCache(Source("s3cr3t-xyz"))
    cache.load()
    assert "s3cr3t" not in repr(cache) and "s3cr3t" not in str(cache)
