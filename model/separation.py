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
    span = waveform[start : start + config.segment_samples]
    if span.shape[0] == config.segment_samples:
        return np.ascontiguousarray(span, dtype=np.float32)
    out = np.zeros((config.segment_samples, waveform.shape[1]), dtype=np.float32)
    out[: span.shape[0]] = span
    return out


def segment_stft(span: np.ndarray, config: ModelConfig) -> np.ndarray:
    """STFT of a segment's samples -> ``[T, N//2+1, 2]`` complex64."""
    return spectral.stft(span, config.frame_length, config.frame_step, frames=config.T)


def mix_magnitude(stft_segment: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Model input from a segment STFT: ``|X|`` of the first F bins, ``[T, F, 2]`` float32."""
    return np.abs(stft_segment[:, : config.F, :]).astype(np.float32)


def soft_mask_segment(stft_segment: np.ndarray, sources: np.ndarray, config: ModelConfig) -> np.ndarray:
    """Time signal of each source for one segment (not yet overlap-added).

    stft_segment: ``[T, N//2+1, 2]``; sources: model output ``[T, F, 2, S]``.
    Returns ``[segment_samples, 2, S]`` float32.
    """
    masks = spectral.extend_bins(spectral.ratio_masks(sources, config.separation_exponent), config.n_bins)
    out = []
    for k in range(sources.shape[-1]):
        out.append(spectral.istft(stft_segment * masks[..., k], config.frame_length, config.frame_step))
    return np.stack(out, axis=-1)


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
    return norbert.wiener(v, mix_stft, iterations=iterations).astype(np.complex64)


def separate_waveform(
    waveform: np.ndarray,
    predict,
    config: ModelConfig,
    mwf: bool = False,
    batch_size: int = 1,
) -> Dict[str, np.ndarray]:
    """Separate ``waveform [n, 2]`` into ``{instrument: [n, 2]}``.

    ``predict`` maps mixture magnitudes ``[B, T, F, 2]`` to source magnitudes
    ``[B, T, F, 2, S]``. Soft masks stream segment by segment; ``mwf`` filters
    the whole track at once, as Spleeter does.
    """
    n = waveform.shape[0]
    if mwf:
        mix = spectral.stft(waveform, config.frame_length, config.frame_step)
        sources = np.concatenate([s for _, s in _predict_segments(waveform, predict, config, batch_size)])
        estimates = wiener_filter(sources[: mix.shape[0]], mix, config)
        return {
            name: spectral.istft(estimates[..., k], config.frame_length, config.frame_step)[:n]
            for k, name in enumerate(config.instruments)
        }
    segments = _predict_segments(waveform, predict, config, batch_size)
    stacked = overlap_add_segments((soft_mask_segment(x, s, config) for x, s in segments), config, n)
    return {name: np.ascontiguousarray(stacked[..., k]) for k, name in enumerate(config.instruments)}


def _predict_segments(waveform: np.ndarray, predict, config: ModelConfig, batch_size: int) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(segment STFT [T, N//2+1, 2], source magnitudes [T, F, 2, S])`` of each segment, in order."""
    segments = segment_count(waveform.shape[0], config)
    for first in range(0, segments, batch_size):
        stfts = [segment_stft(segment_waveform(waveform, j, config), config) for j in range(first, min(first + batch_size, segments))]
        sources = np.asarray(predict(np.stack([mix_magnitude(x, config) for x in stfts])))
        yield from zip(stfts, sources)
