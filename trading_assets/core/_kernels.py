"""Compiled (numba) loops behind `indicators`; private, 1-D float64 in, preallocated out.

Every kernel skips leading NaNs, writes NaN over its own warm-up, and returns a status:
`OK`, or `NON_FINITE` when a NaN/inf shows up after the first valid input (the caller
raises). Kernels follow TA-Lib's definitions step by step; where a hot loop is rewritten
for speed (a linear recurrence unrolled four ways, multiplication by a reciprocal instead
of division) the result differs from TA-Lib only by rounding, far below 1e-9.

Compilation is cached on disk (`cache=True`), so a process pays it once per machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OK = 0
NON_FINITE = 1

# TA-Lib's TA_IS_ZERO: an absolute threshold, in price units.
_TA_EPSILON = 0.00000001


@njit(cache=True)
def first_valid(x: np.ndarray) -> int:
    """Index of the first non-NaN value (len(x) if none)."""
    i = 0
    n = x.shape[0]
    while i < n and x[i] != x[i]:
        i += 1
    return i


@njit(cache=True)
def first_valid3(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> int:
    """Index of the first bar where high, low and close are all non-NaN (n if none)."""
    i = 0
    n = h.shape[0]
    while i < n and (h[i] != h[i] or lo[i] != lo[i] or c[i] != c[i]):
        i += 1
    return i


@njit(cache=True)
def _fill_nan(out: np.ndarray, stop: int) -> None:
    for i in range(min(stop, out.shape[0])):
        out[i] = np.nan


@njit(cache=True)
def _linear_recurrence(y: float, x: np.ndarray, a: float, b: float, out: np.ndarray) -> float:
    """out[i] = a*out[i-1] + b*x[i] for all i, out[-1] being `y`; returns the last y.

    Unrolled four ways: the four outputs of a block all derive from the block's incoming
    `y`, so the loop-carried chain is one multiply-add per four bars instead of per bar.
    `x` and `out` may be the same array (each block reads before it writes).
    """
    n = x.shape[0]
    a2 = a * a
    a3 = a2 * a
    a4 = a3 * a
    i = 0
    while i + 3 < n:
        b1 = b * x[i]
        b2 = b * x[i + 1]
        b3 = b * x[i + 2]
        b4 = b * x[i + 3]
        c2 = a * b1 + b2
        c3 = a * c2 + b3
        c4 = a * c3 + b4
        out[i] = a * y + b1
        out[i + 1] = a2 * y + c2
        out[i + 2] = a3 * y + c3
        y = a4 * y + c4
        out[i + 3] = y
        i += 4
    while i < n:
        y = a * y + b * x[i]
        out[i] = y
        i += 1
    return y


@njit(cache=True)
def _seeded_recurrence(x: np.ndarray, begin: int, period: int, a: float, b: float, out) -> int:
    """Seed with the SMA of x[begin : begin+period], then y = a*y + b*x (EMA, Wilder)."""
    n = x.shape[0]
    seed_at = begin + period - 1
    if seed_at >= n:
        _fill_nan(out, n)
        return OK
    total = 0.0
    for i in range(begin, begin + period):
        total += x[i]
    y = total / period
    _fill_nan(out, seed_at)  # after the seed sum: `x` may be `out` (ATR smooths in place)
    out[seed_at] = y
    y = _linear_recurrence(y, x[seed_at + 1 :], a, b, out[seed_at + 1 :])
    return OK if np.isfinite(y) else NON_FINITE


@njit(cache=True)
def ema(x: np.ndarray, period: int, out: np.ndarray) -> int:
    """TA-Lib EMA: SMA seed over the first `period` values, then alpha = 2/(period+1)."""
    k = 2.0 / (period + 1.0)
    return _seeded_recurrence(x, first_valid(x), period, 1.0 - k, k, out)


@njit(cache=True)
def wilder(x: np.ndarray, period: int, out: np.ndarray) -> int:
    """Wilder's smoothing (RMA): SMA seed, then y = (y*(period-1) + x) / period."""
    return _seeded_recurrence(x, first_valid(x), period, (period - 1.0) / period, 1.0 / period, out)


@njit(cache=True)
def sma(x: np.ndarray, period: int, out: np.ndarray) -> int:
    """TA-Lib SMA: the mean of the last `period` values, as a running window sum.

    The sum moves by (entering - leaving) per bar, one add on the loop-carried chain, and
    is recomputed from scratch every `_RESUM` bars so rounding cannot drift over long
    series (TA-Lib's own running sum does drift; the two agree far below 1e-9).
    """
    n = x.shape[0]
    begin = first_valid(x)
    seed_at = begin + period - 1
    if seed_at >= n:
        _fill_nan(out, n)
        return OK
    _fill_nan(out, seed_at)
    inv = 1.0 / period
    total = 0.0
    i = seed_at
    while i < n:
        total = 0.0
        for v in x[i - period + 1 : i + 1]:
            total += v
        out[i] = total * inv
        stop = min(i + _RESUM, n)
        # views, so the loop index starts at a constant (numba then drops the
        # negative-index wraparound checks and the loop runs at memory speed)
        entering = x[i + 1 : stop]
        leaving = x[i + 1 - period : stop - period]
        dest = out[i + 1 : stop]
        for j in range(entering.shape[0]):
            total += entering[j] - leaving[j]
            dest[j] = total * inv
        if not np.isfinite(total):  # checked per block: the next re-sum would forget it
            return NON_FINITE
        i = stop
    return OK


_RESUM = 1024


@njit(cache=True)
def _tr(h: float, lo: float, prev_close: float) -> float:
    """TA-Lib TRUE_RANGE: the largest of high-low, |high-prev close|, |low-prev close|.

    NaN if any input is NaN (the added zeros are exact for finite inputs), so a gap
    reaches the loop-carried sums that the status check looks at.
    """
    out = h - lo
    t = abs(h - prev_close)
    if t > out:
        out = t
    t = abs(lo - prev_close)
    if t > out:
        out = t
    return out + ((h - h) + (lo - lo) + (prev_close - prev_close))


@njit(cache=True)
def true_range(h: np.ndarray, lo: np.ndarray, c: np.ndarray, out: np.ndarray) -> int:
    """TA-Lib TRANGE: undefined on the first valid bar (no previous close)."""
    begin = first_valid3(h, lo, c)
    _fill_nan(out, begin + 1)
    hh, ll, cc, oo = h[begin:], lo[begin:], c[begin:], out[begin:]
    bad = False
    for i in range(1, hh.shape[0]):
        t = _tr(hh[i], ll[i], cc[i - 1])
        bad |= t != t
        oo[i] = t
    return NON_FINITE if bad else OK


@njit(cache=True)
def atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, period: int, out: np.ndarray) -> int:
    """TA-Lib ATR: Wilder smoothing of the true range, seeded with its first SMA.

    Chunk by chunk: the chunk's true ranges go straight into `out` (a loop the compiler
    vectorises), then are smoothed in place while still in cache.
    """
    n = h.shape[0]
    begin = first_valid3(h, lo, c)
    seed_at = begin + period  # the first true range is at begin + 1
    if seed_at >= n:
        _fill_nan(out, n)
        return OK
    _fill_nan(out, seed_at)
    total = 0.0
    for i in range(begin + 1, seed_at + 1):
        total += _tr(h[i], lo[i], c[i - 1])
    y = total / period
    out[seed_at] = y
    a = (period - 1.0) / period
    b = 1.0 / period
    start = seed_at + 1
    while start < n:
        stop = min(start + _CHUNK, n)
        hh, ll, pc, dest = h[start:stop], lo[start:stop], c[start - 1 : stop - 1], out[start:stop]
        for k in range(dest.shape[0]):
            dest[k] = _tr(hh[k], ll[k], pc[k])
        y = _linear_recurrence(y, dest, a, b, dest)
        start = stop
    return OK if np.isfinite(y) else NON_FINITE


_CHUNK = 512


@njit(cache=True)
def _directional(dp: float, dm: float) -> tuple[float, float]:
    """TA-Lib's +DM/-DM of one bar from the up-move dp and down-move dm (branch-free)."""
    p_add = dp if ((dp > 0.0) & (dp > dm)) else 0.0
    m_add = dm if ((dm > 0.0) & (dp < dm)) else 0.0
    return p_add, m_add


@njit(cache=True)
def _di_dx(p_dm: float, m_dm: float, tr: float) -> tuple[float, float, float, bool]:
    """+DI, -DI and DX from the Wilder sums; DX is only valid when the flag is True."""
    if -_TA_EPSILON < tr < _TA_EPSILON:
        return 0.0, 0.0, 0.0, False
    scale = 100.0 / tr
    pdi = p_dm * scale
    mdi = m_dm * scale
    s = pdi + mdi
    if -_TA_EPSILON < s < _TA_EPSILON:
        return pdi, mdi, 0.0, False
    return pdi, mdi, 100.0 * (abs(mdi - pdi) / s), True


@njit(cache=True)
def dmi(
    h: np.ndarray,
    lo: np.ndarray,
    c: np.ndarray,
    period: int,
    plus_di: np.ndarray,
    minus_di: np.ndarray,
    adx: np.ndarray,
) -> int:
    """TA-Lib PLUS_DI, MINUS_DI and ADX in one pass.

    Wilder *sums* of +DM, -DM and TR: the first `period-1` moves summed, then
    s = s*(1 - 1/period) + v (TA-Lib's s - s/period + v, up to rounding).
    DI = 100*DM/TR (0 when TR is ~0); DX = 100*|+DI - -DI|/(+DI + -DI); ADX = mean of the
    first `period` DX, then Wilder-averaged. DI is defined from begin+period, ADX from
    begin+2*period-1. As in TA-Lib, a DX with TR or DI sum ~0 is left out of the seed sum
    (still divided by `period`) and does not move the ADX.
    """
    n = h.shape[0]
    begin = first_valid3(h, lo, c)
    di_at = begin + period
    adx_at = begin + 2 * period - 1
    _fill_nan(plus_di, di_at)
    _fill_nan(minus_di, di_at)
    _fill_nan(adx, adx_at)
    if begin + 1 >= n:
        return OK
    decay = 1.0 - 1.0 / period
    inv_period = 1.0 / period
    p_dm = 0.0
    m_dm = 0.0
    tr = 0.0
    for i in range(begin + 1, min(di_at, n)):  # plain sums of the first period-1 moves
        p_add, m_add = _directional(h[i] - h[i - 1], lo[i - 1] - lo[i])
        p_dm += p_add
        m_dm += m_add
        tr += _tr(h[i], lo[i], c[i - 1])
    sum_dx = 0.0
    for i in range(di_at, min(adx_at + 1, n)):  # DI defined; DX summed for the ADX seed
        p_add, m_add = _directional(h[i] - h[i - 1], lo[i - 1] - lo[i])
        p_dm = p_dm * decay + p_add
        m_dm = m_dm * decay + m_add
        tr = tr * decay + _tr(h[i], lo[i], c[i - 1])
        pdi, mdi, dx, dx_ok = _di_dx(p_dm, m_dm, tr)
        plus_di[i] = pdi
        minus_di[i] = mdi
        if dx_ok:
            sum_dx += dx
    y = sum_dx / period
    if adx_at < n:
        adx[adx_at] = y
    # The hot loop, chunk by chunk: first each bar's +DM, -DM and true range go into the
    # outputs (a branch-free loop the compiler vectorises), then the Wilder sums, DI and
    # ADX run over them in place while the chunk is in cache.
    start = adx_at + 1
    while start < n:
        stop = min(start + _CHUNK, n)
        h1, h0 = h[start:stop], h[start - 1 : stop - 1]
        l1, l0 = lo[start:stop], lo[start - 1 : stop - 1]
        c0 = c[start - 1 : stop - 1]
        pb, mb, ab = plus_di[start:stop], minus_di[start:stop], adx[start:stop]
        for k in range(pb.shape[0]):
            p_add, m_add = _directional(h1[k] - h0[k], l0[k] - l1[k])
            pb[k] = p_add
            mb[k] = m_add
            ab[k] = _tr(h1[k], l1[k], c0[k])
        for k in range(pb.shape[0]):
            p_dm = p_dm * decay + pb[k]
            m_dm = m_dm * decay + mb[k]
            tr = tr * decay + ab[k]
            pdi, mdi, dx, dx_ok = _di_dx(p_dm, m_dm, tr)
            pb[k] = pdi
            mb[k] = mdi
            if dx_ok:
                y = y * decay + dx * inv_period
            ab[k] = y
        start = stop
    return OK if np.isfinite(tr) else NON_FINITE


@njit(cache=True)
def peaks(x: np.ndarray, window: int, out: np.ndarray) -> None:
    """out[i] = x[i] strictly beats every x[j], 0 < |i-j| <= window (both sides full).

    Linear time whatever the data: a right-hand scan of length L proves the L bars it
    passed over are not peaks (x[i] is within their left window and beats them), so the
    next candidate is where the scan stopped; a left scan only follows a full right pass,
    after which `window` bars are skipped.
    """
    n = x.shape[0]
    out[:] = False
    i = window
    last = n - window  # exclusive: bars from here on lack a full right window
    while i < last:
        xi = x[i]
        j = i + 1
        while j <= i + window and xi > x[j]:
            j += 1
        if j <= i + window:  # x[j] >= x[i] (or NaN): i is no peak, nor anything before j
            i = j
            continue
        k = i - window
        while k < i and xi > x[k]:
            k += 1
        if k == i:
            out[i] = True
        i += window + 1


@njit(cache=True)
def troughs(x: np.ndarray, window: int, out: np.ndarray) -> None:
    """Mirror of `peaks`: x[i] strictly below every other bar within `window` each side."""
    n = x.shape[0]
    out[:] = False
    i = window
    last = n - window
    while i < last:
        xi = x[i]
        j = i + 1
        while j <= i + window and xi < x[j]:
            j += 1
        if j <= i + window:
            i = j
            continue
        k = i - window
        while k < i and xi < x[k]:
            k += 1
        if k == i:
            out[i] = True
        i += window + 1
