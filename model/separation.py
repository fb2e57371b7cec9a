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
from typing import Dict, Iterator, Tuple

import numpy as np

from stembeam.model import spectral
from stembeam.model.config import ModelConfig
from stembeam.model.wiener import wiener_filter, wiener_segment


def segment_count(n_samples: int, config: ModelConfig) -> int:
    """Number of T-frame segments of a track of ``n_samples`` (``ceil(ceil(n / hop) / T)``) under ``config`` (ModelConfig)."""
    return -(-spectral.n_frames(n_samples, config.frame_step) // config.T)


def segment_start(index: int, config: ModelConfig) -> int:
    """First sample of segment ``index`` (``index * T * hop``) under ``config`` (ModelConfig)."""
    return index * config.T * config.frame_step


def segment_waveform(waveform: np.ndarray, index: int, config: ModelConfig) -> np.ndarray:
    """The samples of one segment.

    Args:
        waveform: ``[samples, 2]`` float32, the whole track.
        index: the segment.
        config: ModelConfig.
    Returns:
        ``[L, 2]`` float32, zero padded past the track's end.
    """
    start = segment_start(index, config)
    return pad_segment(waveform[start : start + config.segment_samples], config)


def pad_segment(span: np.ndarray, config: ModelConfig) -> np.ndarray:
    """A segment's samples, zero padded at the end.

    Args:
        span: ``[k, 2]`` samples, ``k <= L``.
        config: ModelConfig.
    Returns:
        ``[L, 2]`` float32 (``span`` itself, contiguous float32, when already L long).
    """
    if span.shape[0] == config.segment_samples:
        return np.ascontiguousarray(span, dtype=np.float32)
    out = np.zeros((config.segment_samples, span.shape[1]), dtype=np.float32)
    out[: span.shape[0]] = span
    return out


def segment_frames(index: int, n_samples: int, config: ModelConfig) -> int:
    """How many of a segment's T frames are frames of the track (the rest is padding).

    Args:
        index: the segment.
        n_samples: the track's length.
        config: ModelConfig.
    Returns:
        An int in ``[0, T]``.
    """
    return max(0, min(config.T, spectral.n_frames(n_samples, config.frame_step) - index * config.T))


class OverlapAdd:
    """Overlap-adds consecutive segment signals, returning each finished stretch once.

    ``add(block)`` takes segment ``j``'s ``[L, ...]`` signal (any trailing axes, e.g.
    ``[L, 2, S]``) and returns the ``T * hop`` samples that no later segment touches;
    ``finish()`` returns the overlap left after the last one.

    Args:
        config: ModelConfig (T, hop).
    """

    def __init__(self, config: ModelConfig):
        self._advance = config.T * config.frame_step
        self._carry = None

    def add(self, block: np.ndarray) -> np.ndarray:
        """Add segment ``block [L, ...]``; returns its finished ``[T * hop, ...]`` samples."""
        block = block.copy()
        if self._carry is not None:
            block[: self._carry.shape[0]] += self._carry
        self._carry = block[self._advance :]
        return block[: self._advance]

    def finish(self) -> np.ndarray:
        """The overlap left after the last segment, ``[L - T * hop, ...]`` (``[0]`` when none was added)."""
        return self._carry if self._carry is not None else np.zeros((0,), dtype=np.float32)


def overlap_add_segments(signals, config: ModelConfig, n_samples: int) -> np.ndarray:
    """Overlap-add segment signals given in order.

    Args:
        signals: an iterable of ``[L, ...]`` float32, segment 0 first.
        config: ModelConfig.
        n_samples: the track's length.
    Returns:
        ``[n_samples, ...]`` float32.
    """
    adder = OverlapAdd(config)
    pieces = [adder.add(signal) for signal in signals] + [adder.finish()]
    return np.concatenate(pieces, axis=0)[:n_samples]


def separate_waveform(
    waveform: np.ndarray,
    separator,
    mwf: bool = False,
    batch_size: int = 1,
    mwf_block_frames: int | None = None,
    synthesis_threads: int = 1,
) -> Dict[str, np.ndarray]:
    """Separate a whole track, segment by segment (soft masks or the Wiener filter), overlap-added.

    Args:
        waveform: ``[samples, 2]`` float32 at the model's rate.
        separator: a model.segment_graph.SegmentSeparator.
        mwf: the multichannel Wiener filter instead of soft masks.
        batch_size: segments per U-net call (B).
        mwf_block_frames: the Wiener filter's block in frames (None: one segment, T frames; 0:
            the whole track at once, as Spleeter).
        synthesis_threads: > 1: the soft masks' inverse STFT of a batch's segments and channels
            runs on that many threads (for one song at a time; the same samples).
    Returns:
        ``{instrument: [samples, 2] float32}`` in the model's order.
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
            specs, sources = separator.spectra(spans)
            for j, (spec, source) in enumerate(zip(specs, sources)):
                yield wiener_segment(spec, source, config, segment_frames(first + j, n, config), block)

    if not count:
        return {name: np.zeros((0, 2), np.float32) for name in config.instruments}
    if mwf:
        stacked = overlap_add_segments(signals(), config, n)
        return {name: np.ascontiguousarray(stacked[..., k]) for k, name in enumerate(config.instruments)}
    # Each segment's signals are added straight into the track's stems, one contiguous
    # [samples, 2] array per stem: the bits of overlap_add_segments (a sum of two floats does
    # not depend on their order, only neighbouring segments overlap, and the signals, sums from
    # +0.0, hold no -0.0 that adding to the zeros would turn into +0.0), without an array per
    # segment nor a transposing copy (30 ms of a 30-s song's 0.7 s).
    length = config.segment_samples
    stems = np.zeros((len(config.instruments), segment_start(count - 1, config) + length, 2), np.float32)
    with concurrent.futures.ThreadPoolExecutor(synthesis_threads, thread_name_prefix="stembeam-synthesis") if synthesis_threads > 1 else contextlib.nullcontext() as pool:
        for first, spans in _batches(waveform, config, batch_size):
            spans_in_stems = [stems[:, segment_start(j, config) : segment_start(j, config) + length] for j in range(first, first + len(spans))]
            separator.soft(spans, pool=pool, into=spans_in_stems)
    return {name: stems[k, :n] for k, name in enumerate(config.instruments)}


def _batches(waveform: np.ndarray, config: ModelConfig, batch_size: int) -> Iterator[Tuple[int, np.ndarray]]:
    """``(first segment index, spans [B, L, 2])`` in order."""
    count = segment_count(waveform.shape[0], config)
    for first in range(0, count, batch_size):
        yield first, np.stack([segment_waveform(waveform, j, config) for j in range(first, min(first + batch_size, count))])


def residual_stems(stems: Dict[str, np.ndarray], mixture: np.ndarray) -> Dict[str, np.ndarray]:
    """Replace the last stem by the mixture minus the others (Open-Unmix's ``--residual``; see with_residual).

    Args:
        stems: ``{name: [samples, 2] float32}``.
        mixture: ``[n, 2]`` float32, ``n >= samples``.
    Returns:
        ``stems`` with the last entry replaced.
    """
    names = list(stems)
    stacked = with_residual(np.stack([stems[name] for name in names], axis=-1), mixture[: stems[names[0]].shape[0]])
    return {**stems, names[-1]: np.ascontiguousarray(stacked[..., -1])}


def with_residual(signals: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Replace the last stem by the mixture minus the other stems: the stems then sum to the mixture
    within float32 rounding. The one implementation of ``--residual``: the API applies it to
    whole signals, the corpus job's writer block by block (the same samples: each sample's sum
    is its own).

    Args:
        signals: ``[samples, 2, S]``.
        mixture: ``[samples, 2]``.
    Returns:
        ``[samples, 2, S]`` float32 (a new array).
    """
    out = np.array(signals, dtype=np.float32)
    out[..., -1] = mixture - np.sum(signals[..., :-1], axis=-1)
    return out
