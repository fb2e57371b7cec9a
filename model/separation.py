"""Separation math around the U-nets, segment by segment, exactly as Spleeter's graph.

A track of ``n`` samples has ``ceil(n / hop)`` STFT frames, cut into segments of
``T`` frames (the last zero padded). Segment ``j`` needs samples
``[j*T*hop, j*T*hop + (T-1)*hop + N)``; its STFT equals frames ``jT..jT+T-1`` of
the whole-track STFT, so segments can be processed independently and the
inverse STFT overlap-added back in order.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
from typing import Dict, Iterator, Tuple

import numpy as np

from stembeam.model import spectral
from stembeam.model.config import ModelConfig


def segment_count(n_samples: int, config: ModelConfig) -> int:
    """Number of T-frame segments of a track of ``n_samples``."""
    return -(-spectral.n_frames(n_samples, config.frame_step) // config.T)


def segment_start(index: int, config: ModelConfig) -> int:
    """First sample of segment ``index``."""
    return index * config.T * config.frame_step


def segment_waveform(waveform: np.ndarray, index: int, config: ModelConfig) -> np.ndarray:
    """Samples of segment ``index`` of ``waveform [n, 2]`` -> ``[segment_samples, 2]``, zero padded."""
    start = segment_start(index, config)
    return pad_segment(waveform[start : start + config.segment_samples], config)


def pad_segment(span: np.ndarray, config: ModelConfig) -> np.ndarray:
    """A segment's samples, zero padded at the end to ``[segment_samples, 2]`` float32."""
    if span.shape[0] == config.segment_samples:
        return np.ascontiguousarray(span, dtype=np.float32)
    out = np.zeros((config.segment_samples, span.shape[1]), dtype=np.float32)
    out[: span.shape[0]] = span
    return out


def segment_frames(index: int, n_samples: int, config: ModelConfig) -> int:
    """How many of segment ``index``'s T frames are frames of the track (the rest is padding)."""
    return max(0, min(config.T, spectral.n_frames(n_samples, config.frame_step) - index * config.T))


class OverlapAdd:
    """Overlap-adds consecutive segment signals, returning each finished stretch once.

    ``add(block)`` takes segment ``j``'s ``[segment_samples, ...]`` signal and
    returns the ``T*hop`` samples that no later segment touches.
    """

    def __init__(self, config: ModelConfig):
        self._advance = config.T * config.frame_step
        self._carry = None

    def add(self, block: np.ndarray) -> np.ndarray:
        block = block.copy()
        if self._carry is not None:
            block[: self._carry.shape[0]] += self._carry
        self._carry = block[self._advance :]
        return block[: self._advance]

    def finish(self) -> np.ndarray:
        """The overlap left after the last segment."""
        return self._carry if self._carry is not None else np.zeros((0,), dtype=np.float32)


def overlap_add_segments(signals, config: ModelConfig, n_samples: int) -> np.ndarray:
    """Overlap-add segment signals given in order and crop to ``[0, n_samples)``."""
    adder = OverlapAdd(config)
    pieces = [adder.add(signal) for signal in signals] + [adder.finish()]
    return np.concatenate(pieces, axis=0)[:n_samples]


def wiener_filter(sources: np.ndarray, mix_stft: np.ndarray, config: ModelConfig, iterations: int = 1) -> np.ndarray:
    """Spleeter's ``--mwf``: ``norbert.wiener(V, X)`` with V zero-extended above F.

    sources: ``[frames, F, 2, S]`` model magnitudes; mix_stft: ``[frames, N//2+1, 2]``.
    Returns the source STFTs ``[frames, N//2+1, 2, S]`` complex64. The same bits on every call
    (see ``norbert_wiener``).
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
    allocated (see above). Scales ``x`` in place, as norbert."""
    y = _softmask(v, x)
    if not iterations:
        return y
    max_abs = max(1, _cabs(x).max() / 10.0)
    x /= max_abs
    y = _expectation_maximization(y / max_abs, x, iterations)[0]
    return y * max_abs


def wiener_segment(spec: np.ndarray, sources: np.ndarray, config: ModelConfig, frames: int, block_frames: int) -> np.ndarray:
    """Wiener-filtered source signals of one segment, not yet overlap-added: ``[L, 2, S]``.

    spec ``[T, N//2+1, 2]``, sources ``[T, F, 2, S]``; only the first ``frames`` (the track's,
    not padding) are filtered, in blocks of ``block_frames`` (the filter's spatial covariances
    are estimated per block, so memory does not grow with the track).
    """
    block = max(1, min(block_frames, config.T))
    estimates = np.zeros(spec.shape + (sources.shape[-1],), dtype=np.complex64)
    for start in range(0, frames, block):
        stop = min(start + block, frames)
        estimates[start:stop] = wiener_filter(sources[start:stop], spec[start:stop], config)
    return np.stack([spectral.istft(estimates[..., k], config.frame_length, config.frame_step) for k in range(sources.shape[-1])], axis=-1)


def separate_waveform(
    waveform: np.ndarray,
    separator,
    mwf: bool = False,
    batch_size: int = 1,
    mwf_block_frames: int | None = None,
    synthesis_threads: int = 1,
) -> Dict[str, np.ndarray]:
    """Separate ``waveform [n, 2]`` into ``{instrument: [n, 2]}``.

    ``separator`` is a model.segment_graph.SegmentSeparator. Soft masks and the Wiener filter
    run segment by segment and are overlap-added; ``mwf_block_frames`` is the Wiener
    filter's block (default: one segment, T frames; 0: the whole track at once, as Spleeter).
    ``synthesis_threads`` > 1: the soft masks' inverse STFT of a batch's segments and channels
    runs on that many threads (for one song at a time; the same samples).
    """
    config = separator.config
    n = waveform.shape[0]
    block = config.T if mwf_block_frames is None else mwf_block_frames
    count = segment_count(n, config)
    if mwf and block == 0:
        mix = spectral.stft(waveform, config.frame_length, config.frame_step)
        sources = np.concatenate([separator.spectra(spans)[1].reshape(-1, config.F, 2, len(config.instruments)) for _, spans in _batches(waveform, config, batch_size)])
        estimates = wiener_filter(sources[: mix.shape[0]], mix, config)
        return {
            name: spectral.istft(estimates[..., k], config.frame_length, config.frame_step)[:n]
            for k, name in enumerate(config.instruments)
        }

    def signals(pool=None):
        for first, spans in _batches(waveform, config, batch_size):
            if not mwf:
                yield from separator.soft(spans, pool=pool)
                continue
            specs, sources = separator.spectra(spans)
            for j, (spec, source) in enumerate(zip(specs, sources)):
                yield wiener_segment(spec, source, config, segment_frames(first + j, n, config), block)

    if not count:
        return {name: np.zeros((0, 2), np.float32) for name in config.instruments}
    if mwf:
        stacked = overlap_add_segments(signals(), config, n)
        return {name: np.ascontiguousarray(stacked[..., k]) for k, name in enumerate(config.instruments)}
    with concurrent.futures.ThreadPoolExecutor(synthesis_threads, thread_name_prefix="stembeam-synthesis") if synthesis_threads > 1 else contextlib.nullcontext() as pool:
        by_stem = overlap_add_by_stem(signals(pool), config, count)
    return {name: by_stem[k, :n] for k, name in enumerate(config.instruments)}


def overlap_add_by_stem(signals, config: ModelConfig, count: int) -> np.ndarray:
    """``count`` segment signals ``[L, C, S]``, given in order, overlap-added into ``[S, samples, C]``
    (each stem's samples contiguous): the bits of ``overlap_add_segments`` (a sum of two
    floats does not depend on their order, only two segments overlap, and the signals, sums
    from +0.0, hold no -0.0 that adding to the zeros would turn into +0.0), without its copies."""
    advance = config.T * config.frame_step
    out = None
    for j, signal in enumerate(signals):
        if out is None:
            out = np.zeros((signal.shape[-1], (count - 1) * advance + signal.shape[0], signal.shape[1]), np.float32)
        out[:, j * advance : j * advance + signal.shape[0]] += signal.transpose(2, 0, 1)
    return out


def _batches(waveform: np.ndarray, config: ModelConfig, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first segment index, spans [B, L, 2])`` in order."""
    count = segment_count(waveform.shape[0], config)
    for first in range(0, count, batch_size):
        yield first, np.stack([segment_waveform(waveform, j, config) for j in range(first, min(first + batch_size, count))])


def residual_stems(stems: Dict[str, np.ndarray], mixture: np.ndarray) -> Dict[str, np.ndarray]:
    """``stems`` with the last one replaced by ``mixture [n, 2]`` minus the others (Open-Unmix's
    ``--residual``): the stems then sum to the mixture within float32 rounding."""
    names = list(stems)
    others = mixture_minus(mixture[: stems[names[0]].shape[0]], np.stack([stems[name] for name in names[:-1]], axis=-1))
    return {**stems, names[-1]: others}


def mixture_minus(mixture: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``mixture [n, 2]`` minus the sum of ``others [n, 2, S-1]``, float32 (the residual stem;
    the corpus job computes it block by block with this same function)."""
    return np.ascontiguousarray(mixture - np.sum(others, axis=-1), dtype=np.float32)
