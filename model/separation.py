"""Separation math around the U-nets, segment by segment, exactly as Spleeter's graph.

A track of ``n`` samples has ``ceil(n / hop)`` STFT frames, cut into segments of
``T`` frames (the last zero padded). Segment ``j`` needs samples
``[j*T*hop, j*T*hop + (T-1)*hop + N)``; its STFT equals frames ``jT..jT+T-1`` of
the whole-track STFT, so segments can be processed independently and the
inverse STFT overlap-added back in order.
"""
from __future__ import annotations

from typing import Dict, Iterator, Tuple

import numpy as np

from model import spectral
from model.config import ModelConfig


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
    Returns the source STFTs ``[frames, N//2+1, 2, S]`` complex64.
    """
    import norbert

    v = spectral.extend_bins(sources.astype(np.float32), config.n_bins)
    # norbert scales its mixture argument in place (x /= max_abs): give it a copy.
    return norbert.wiener(v, np.array(mix_stft, dtype=np.complex64), iterations=iterations).astype(np.complex64)


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
) -> Dict[str, np.ndarray]:
    """Separate ``waveform [n, 2]`` into ``{instrument: [n, 2]}``.

    ``separator`` is a model.segment_graph.SegmentSeparator. Soft masks and the Wiener filter
    run segment by segment and are overlap-added; ``mwf_block_frames`` is the Wiener
    filter's block (default: one segment, T frames; 0: the whole track at once, as Spleeter).
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

    def signals():
        for first, spans in _batches(waveform, config, batch_size):
            if not mwf:
                yield from separator.soft(spans)
                continue
            specs, sources = separator.spectra(spans)
            for j, (spec, source) in enumerate(zip(specs, sources)):
                yield wiener_segment(spec, source, config, segment_frames(first + j, n, config), block)

    stacked = overlap_add_segments(signals(), config, n) if count else np.zeros((0, 2, len(config.instruments)), np.float32)
    return {name: np.ascontiguousarray(stacked[..., k]) for k, name in enumerate(config.instruments)}


def _batches(waveform: np.ndarray, config: ModelConfig, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first segment index, spans [B, L, 2])`` in order."""
    count = segment_count(waveform.shape[0], config)
    for first in range(0, count, batch_size):
        yield first, np.stack([segment_waveform(waveform, j, config) for j in range(first, min(first + batch_size, count))])
