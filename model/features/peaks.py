"""Local extrema, parabolic peak interpolation and onset peak picking, as librosa 0.11's numba
functions compute them (util.localmax / localmin, the pitch module's parabolic interpolation,
util.peak_pick), in numpy: nothing to compile. Checked against librosa in tests/test_feature_reference.py."""
from __future__ import annotations

import numpy as np


def localmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``x[i] > x[i - 1]`` and ``x[i] >= x[i + 1]`` along ``axis``; never the first element, the
    last one if it is above its neighbour (librosa.util.localmax).

    Returns:
        bool, the shape of ``x``.
    """
    x = np.moveaxis(x, axis, -1)
    found = np.zeros(x.shape, dtype=bool)
    found[..., 1:-1] = (x[..., 1:-1] > x[..., :-2]) & (x[..., 1:-1] >= x[..., 2:])
    if x.shape[-1] > 1:
        found[..., -1] = x[..., -1] > x[..., -2]
    return np.moveaxis(found, -1, axis)


def localmin(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """``x[i] < x[i - 1]`` and ``x[i] <= x[i + 1]`` along ``axis``, the edges as localmax (librosa.util.localmin).

    Returns:
        bool, the shape of ``x``.
    """
    x = np.moveaxis(x, axis, -1)
    found = np.zeros(x.shape, dtype=bool)
    found[..., 1:-1] = (x[..., 1:-1] < x[..., :-2]) & (x[..., 1:-1] <= x[..., 2:])
    if x.shape[-1] > 1:
        found[..., -1] = x[..., -1] < x[..., -2]
    return np.moveaxis(found, -1, axis)


def parabolic_shifts(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Offset of the vertex of the parabola through each point and its two neighbours along
    ``axis`` (in bins, within (-1, 1); 0 where the vertex lies further, and at both edges), in
    ``x``'s dtype, computed in float64 as librosa's stencil computes it.

    Returns:
        The shape and dtype of ``x``.
    """
    x = np.moveaxis(x, axis, -1)
    shifts = np.zeros_like(x)
    before, here, after = x[..., :-2], x[..., 1:-1], x[..., 2:]
    a = (after + before).astype(np.float64) - 2.0 * here.astype(np.float64)
    b = (after - before).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shifts[..., 1:-1] = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a)
    return np.moveaxis(shifts, -1, axis)


def peak_pick(x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float, wait: int) -> np.ndarray:
    """Peaks of a series, as librosa.util.peak_pick: ``x[i]`` is the maximum of ``x[i - pre_max :
    i + post_max]``, at least ``delta`` above the mean of ``x[i - pre_avg : i + post_avg]``, and
    more than ``wait`` samples after the previous peak.

    Args:
        x: ``[n]`` float.
        pre_max, post_max, pre_avg, post_avg, wait: in samples of ``x``.
        delta: the threshold over the local mean.
    Returns:
        ``[p]`` int indices, ascending.
    """
    n = x.shape[0]
    index = np.arange(n)
    padded = np.concatenate([np.full(pre_max, -np.inf, x.dtype), x, np.full(post_max, -np.inf, x.dtype)])
    candidates = x == np.lib.stride_tricks.sliding_window_view(padded, pre_max + post_max)[:n].max(axis=1)
    # Each window's sum in x's dtype, added in order as librosa's loop adds it (zeros beyond the edges add nothing).
    padded = np.concatenate([np.zeros(pre_avg, x.dtype), x, np.zeros(post_avg, x.dtype)])
    sums = np.zeros(n, x.dtype)
    for offset in range(pre_avg + post_avg):
        sums += padded[offset : offset + n]
    counts = np.minimum(n, index + post_avg) - np.maximum(0, index - pre_avg)
    candidates &= x >= sums / counts + np.float64(np.float32(delta))  # librosa's delta is a float32 argument
    peaks, next_allowed = [], 0
    for i in np.flatnonzero(candidates):
        if i >= next_allowed:
            peaks.append(i)
            next_allowed = i + wait + 1
    return np.asarray(peaks, dtype=np.int64)
