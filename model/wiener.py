"""The multichannel Wiener filter (Spleeter's ``--mwf``): norbert 0.2.1's ``wiener`` step for step,
with bits that do not depend on where numpy puts its temporaries.

Shapes: ``[frames, bins, channels, sources]`` for source spectrograms and filtered STFTs,
``[frames, bins, channels]`` for the mixture's STFT (see the stembeam package docstring).
"""
from __future__ import annotations

import itertools

import numpy as np

from stembeam.model import spectral
from stembeam.model.config import ModelConfig


def wiener_filter(sources: np.ndarray, mix_stft: np.ndarray, config: ModelConfig, iterations: int = 1) -> np.ndarray:
    """Spleeter's ``--mwf``: ``norbert.wiener(V, X)`` with V zero-extended above F. The same bits on
    every call (see ``norbert_wiener``).

    Args:
        sources: ``[frames, F, 2, S]`` source magnitudes from the U-nets.
        mix_stft: ``[frames, bins, 2]`` complex, the mixture's STFT (not modified).
        config: ModelConfig.
        iterations: EM iterations.
    Returns:
        ``[frames, bins, 2, S]`` complex64, the source STFTs.
    """
    v = spectral.extend_bins(sources.astype(np.float32), config.n_bins)
    # the filter scales its mixture argument in place (x /= max_abs), as norbert: give it a copy.
    return norbert_wiener(v, np.array(mix_stft, dtype=np.complex64), iterations=iterations).astype(np.complex64)


# --- norbert.wiener, reproducibly -----------------------------------------------------------
# The functions below follow norbert 0.2.1 (github.com/sigsep/norbert, MIT licence, Antoine Liutkus
# and Fabian-Robert Stoter) operation for operation; only how the complex products are computed differs.
# numpy (1.26, AVX2/AVX-512 builds) has two kernels for a complex product and for a complex
# absolute value: a SIMD one (fused multiply-add; ratio form of hypot) and a scalar fallback
# (two roundings; libm hypot), which disagree in the last bit of about a third of the
# elements. Which one runs depends on the buffers' addresses: the fallback is taken when an
# input's address range, taken as ``[start, start + step * length]`` (so a strided view reaches
# up to a step past its last element), touches the output's. norbert multiplies strided views
# (``R[None, :, i1, i3] * inv_Cxx[..., i3, i2]``, ``y_j[..., i1] * conj(y_j[..., i2])``, ...)
# into freshly allocated temporaries, so where malloc puts a temporary decided the rounding;
# on the pipeline's worker threads (their own malloc arenas, shared with TensorFlow and Beam)
# it changed from run to run and the same block of frames gave different stems. Here every
# product of two genuinely complex arrays, and every complex absolute value, takes contiguous
# inputs into an output with 64 free bytes on each side, so the SIMD kernel always runs: the
# bits are those norbert.wiener gives when its temporaries never touch (as they did not in
# ``stembeam separate --mwf`` on the cc0 songs). Products with a real factor (zero imaginary
# part) and every other operation round the same in both kernels and are norbert's own
# expressions, in its order.

_GUARD = 64  # bytes kept free before and after each output
_CHUNK = 32  # frames filtered at once (norbert: 1; the same bits, fewer Python steps)


def _isolated(shape, dtype) -> np.ndarray:
    """An uninitialised array whose bytes are ``_GUARD`` bytes away from any other buffer."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + 2 * _GUARD, dtype=np.uint8)
    return raw[_GUARD : _GUARD + count * dtype.itemsize].view(dtype).reshape(shape)


def _cmul(a, b) -> np.ndarray:
    """``a * b`` of two complex arrays (broadcast), always through numpy's SIMD kernel."""
    a, b = np.asarray(a), np.asarray(b)
    dtype = np.result_type(a, b)
    a, b = np.broadcast_arrays(a, b)
    out = _isolated(a.shape, dtype)
    np.multiply(np.ascontiguousarray(a, dtype), np.ascontiguousarray(b, dtype), out=out)
    return out


def _cabs(a) -> np.ndarray:
    """``np.abs(a)`` of a complex array, always through numpy's SIMD kernel."""
    a = np.ascontiguousarray(a)
    out = _isolated(a.shape, a.real.dtype)
    np.absolute(a, out=out)
    return out


def _covariance(y_j):
    # norbert._covariance
    (nb_frames, nb_bins, nb_channels) = y_j.shape
    Cj = np.zeros((nb_frames, nb_bins, nb_channels, nb_channels), y_j.dtype)
    for (i1, i2) in itertools.product(*(range(nb_channels),) * 2):
        Cj[..., i1, i2] += _cmul(y_j[..., i1], np.conj(y_j[..., i2]))
    return Cj


def _local_gaussian_model(y_j, eps=1.0):
    # norbert.get_local_gaussian_model; covariances of _CHUNK frames at a time, summed frame
    # after frame in norbert's order
    v_j = np.mean(_cabs(y_j) ** 2, axis=2)
    nb_frames = y_j.shape[0]
    R_j = 0
    weight = eps
    for first in range(0, nb_frames, _CHUNK):
        covariances = _covariance(y_j[first : first + _CHUNK])
        for t in range(covariances.shape[0]):
            R_j += covariances[None, t]
            weight += v_j[None, first + t, ...]
    R_j /= weight[..., None, None]
    return v_j, R_j


def _mix_model(v, R):
    # norbert.get_mix_model (real v times complex R: the same bits in either kernel)
    nb_channels = R.shape[1]
    (nb_frames, nb_bins, nb_sources) = v.shape
    Cxx = np.zeros((nb_frames, nb_bins, nb_channels, nb_channels), R.dtype)
    for j in range(nb_sources):
        Cxx += v[..., j, None, None] * R[None, ..., j]
    return Cxx


def _invert(M, eps):
    # norbert._invert
    nb_channels = M.shape[-1]
    if nb_channels == 1:
        return 1.0 / (M + eps)
    if nb_channels == 2:
        det = _cmul(M[..., 0, 0], M[..., 1, 1]) - _cmul(M[..., 0, 1], M[..., 1, 0])
        invDet = 1.0 / (det)
        invM = np.empty_like(M)
        invM[..., 0, 0] = _cmul(invDet, M[..., 1, 1])
        invM[..., 1, 0] = _cmul(-invDet, M[..., 1, 0])
        invM[..., 0, 1] = _cmul(-invDet, M[..., 0, 1])
        invM[..., 1, 1] = _cmul(invDet, M[..., 0, 0])
        return invM
    return np.linalg.pinv(M, eps)


def _wiener_gain(v_j, R_j, inv_Cxx):
    # norbert.wiener_gain
    (_, nb_channels) = R_j.shape[:2]
    G = np.zeros_like(inv_Cxx)
    for (i1, i2, i3) in itertools.product(*(range(nb_channels),) * 3):
        G[..., i1, i2] += _cmul(R_j[None, :, i1, i3], inv_Cxx[..., i3, i2])
    G *= v_j[..., None, None]
    return G


def _apply_filter(x, W):
    # norbert.apply_filter
    nb_channels = W.shape[-1]
    y_hat = 0 + 0j
    for i in range(nb_channels):
        y_hat += _cmul(W[..., i], x[..., i, None])
    return y_hat


def _expectation_maximization(y, x, iterations=2, eps=None):
    # norbert.expectation_maximization
    if eps is None:
        eps = np.finfo(np.real(x[0]).dtype).eps
    (nb_frames, nb_bins, nb_channels) = x.shape
    nb_sources = y.shape[-1]
    R = np.zeros((nb_bins, nb_channels, nb_channels, nb_sources), x.dtype)
    v = np.zeros((nb_frames, nb_bins, nb_sources))
    regularization = np.sqrt(eps) * (np.tile(np.eye(nb_channels, dtype=np.complex64), (1, nb_bins, 1, 1)))
    for it in range(iterations):
        for j in range(nb_sources):
            v[..., j], R[..., j] = _local_gaussian_model(y[..., j], eps)
        # norbert filters frame by frame; every step is elementwise, so _CHUNK frames at once
        # give the same bits
        for t in range(0, nb_frames, _CHUNK):
            frames = slice(t, t + _CHUNK)
            Cxx = _mix_model(v[frames, ...], R)
            Cxx += regularization
            inv_Cxx = _invert(Cxx, eps)
            for j in range(nb_sources):
                W_j = _wiener_gain(v[frames, ..., j], R[..., j], inv_Cxx)
                y[frames, ..., j] = _apply_filter(x[frames, ...], W_j)
    return y, v, R


def _softmask(v, x, eps=None):
    # norbert.softmask (a real mask times the mixture: the same bits in either kernel)
    if eps is None:
        eps = np.finfo(np.real(x[0]).dtype).eps
    total_energy = np.sum(v, axis=-1, keepdims=True)
    mask = v / (eps + total_energy.astype(x.dtype))
    return mask * x[..., None]


def norbert_wiener(v: np.ndarray, x: np.ndarray, iterations: int = 1) -> np.ndarray:
    """``norbert.wiener(v, x, iterations)`` (norbert 0.2.1: soft-mask start, EM iterations),
    operation for operation, with results that do not depend on where numpy's temporaries are
    allocated (see above).

    Args:
        v: ``[frames, bins, channels, S]`` float32 source magnitudes.
        x: ``[frames, bins, channels]`` complex64 mixture STFT; scaled in place, as norbert.
        iterations: EM iterations (0: the soft masks alone).
    Returns:
        ``[frames, bins, channels, S]`` complex, the source STFTs.
    """
    y = _softmask(v, x)
    if not iterations:
        return y
    max_abs = max(1, _cabs(x).max() / 10.0)
    x /= max_abs
    y = _expectation_maximization(y / max_abs, x, iterations)[0]
    return y * max_abs


def wiener_segment(spec: np.ndarray, sources: np.ndarray, config: ModelConfig, frames: int, block_frames: int) -> np.ndarray:
    """Wiener-filtered source signals of one segment, not yet overlap-added.

    Only the first ``frames`` (the track's, not padding) are filtered, in blocks of
    ``block_frames`` (the filter's spatial covariances are estimated per block, so memory does
    not grow with the track).

    Args:
        spec: ``[T, bins, 2]`` complex64, the segment's STFT.
        sources: ``[T, F, 2, S]`` float32 source magnitudes.
        config: ModelConfig.
        frames: the segment's frames of the track (segment_frames).
        block_frames: frames per filter block (at most T).
    Returns:
        ``[L, 2, S]`` float32.
    """
    block = max(1, min(block_frames, config.T))
    estimates = np.zeros(spec.shape + (sources.shape[-1],), dtype=np.complex64)
    for start in range(0, frames, block):
        stop = min(start + block, frames)
        estimates[start:stop] = wiener_filter(sources[start:stop], spec[start:stop], config)
    return np.stack([spectral.istft(estimates[..., k], config.frame_length, config.frame_step) for k in range(sources.shape[-1])], axis=-1)
