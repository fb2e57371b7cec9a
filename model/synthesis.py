"""Soft masks, inverse FFT and overlap-add of a batch of segments in one pass (numpy, scipy.fft).

The same float32 operations, in the same order, as the TF graph's synthesis
(model.segment_graph), so the same bits: ``(y_s^2 + eps/S) / (sum_s y_s^2 + eps)`` with the
stems summed in order, the complex product with the mixture STFT, scipy's pocketfft inverse
FFT (bit-identical to TensorFlow's DUCC one for these sizes), the window times 2/3, and each
hop-sized output block summed ``0 + frame k + frame k-1 + ...`` as the graph's shifted adds.
Frames go through in chunks that stay in the CPU caches, on the calling thread only (the
pipeline runs one batch per worker thread; the U-nets keep TensorFlow's thread pool).
Only for masks extended with zeros above F (every official model); tests/test_synthesis.py
proves the bits against the graph.

Frames past a segment's last audible sample (the padding of a track's last segment) have a zero
spectrum, so their signals are zeros that add nothing: ``frames`` skips them, the same bits.
The graph's order costs nothing measurable: a reciprocal shared by the stems instead of their
divisions, or the products as float pairs, took the same time or longer (the inverse FFT is
most of the pass), so bfloat16 separations take this same path.
"""
from __future__ import annotations

import numpy as np
import scipy.fft

from stembeam.model import spectral
from stembeam.model.config import ModelConfig

CHUNK_FRAMES = 64


def supports(config: ModelConfig) -> bool:
    """Whether ``synthesize`` reproduces the graph for ``config`` (ModelConfig): masks zero above F, the exponent 2 and a frame that is a multiple of the hop."""
    return config.mask_extension == "zeros" and config.separation_exponent == 2 and config.frame_length % config.frame_step == 0


def synthesize(spec: np.ndarray, sources: np.ndarray, window: np.ndarray, config: ModelConfig, chunk: int = CHUNK_FRAMES, *,
               frames=None, into=None) -> np.ndarray | None:
    """Soft-mask source signals of each segment, overlap-added within the segment.

    Args:
        spec: ``[B, channels, T, F]`` complex64, the mixture STFT's first F bins.
        sources: ``[B, T, F, channels, S]`` float32, the U-nets' magnitudes.
        window: ``[N]`` float32, the synthesis window already times 2/3.
        config: ModelConfig (see ``supports``).
        chunk: frames processed per pass (memory versus speed; the same samples).
        frames: per segment, how many of its first frames to synthesise (the others must have a
            zero spectrum and finite magnitudes); None: all T.
        into: per segment, an ``[S, L, channels]`` float32 array (a view of a whole track's
            stems) its signals are added to, which overlap-adds segments where they meet in
            the track without an array per segment; None: return the signals.
    Returns:
        ``[B, L, channels, S]`` float32, or None with ``into``.
    """
    batch, channels, count_frames, bins_in = spec.shape
    count = sources.shape[-1]
    n, hop = config.frame_length, config.frame_step
    q = n // hop
    eps, eps_share = np.float32(spectral.EPSILON), np.float32(spectral.EPSILON / count)
    out = None
    if into is None:
        out = np.empty((batch, (count_frames + q - 1) * hop, channels, count), np.float32)
        out_blocks = out.reshape(batch, count_frames + q - 1, hop, channels, count)
    window_blocks = window.reshape(q, hop)
    # The upper bins stay zero: the inverse FFT of F bins zero-padded, as the graph's irfft.
    masked = np.zeros((count, chunk, n // 2 + 1), np.complex64)
    by_stem = np.ascontiguousarray(sources.transpose(0, 3, 4, 1, 2))  # [B, C, S, T, F]
    # Frames k-q+1 .. k of the chunk, each as q hop-sized blocks: the q-1 first carry over.
    pieces = np.zeros((count, chunk + q - 1, q, hop), np.float32)
    # IEEE arithmetic as in the graph, without numpy's warnings: a mixture near float32's limit
    # gives Inf/NaN stems, which the writers refuse with one error naming the file.
    with np.errstate(all="ignore"):
        for b in range(batch):
            used = count_frames if frames is None else int(frames[b])
            for c in range(channels):
                for start in range(0, used + q - 1, chunk):
                    stop = min(start + chunk, used)
                    inside = max(stop - start, 0)
                    pieces[:, : q - 1] = pieces[:, chunk : chunk + q - 1] if start else 0.0
                    if inside:
                        powered = np.square(by_stem[b, c, :, start:stop])  # [S, inside, F]
                        total = powered[0].copy()
                        for s in range(1, count):
                            total += powered[s]
                        total += eps
                        powered += eps_share
                        powered /= total
                        np.multiply(spec[b, c, start:stop], powered, out=masked[:, :inside, :bins_in])
                        signal = scipy.fft.irfft(masked[:, :inside], n, axis=-1, workers=1)
                        np.multiply(signal.reshape(count, inside, q, hop), window_blocks, out=pieces[:, q - 1 : q - 1 + inside])
                    blocks = min(chunk, used + q - 1 - start)
                    pieces[:, q - 1 + inside : q - 1 + blocks] = 0.0
                    total_blocks = pieces[:, q - 1 : q - 1 + blocks, 0] + np.float32(0.0)
                    for j in range(1, q):
                        total_blocks += pieces[:, q - 1 - j : q - 1 - j + blocks, j]
                    if into is None:
                        out_blocks[b, start : start + blocks, :, c, :] = total_blocks.transpose(1, 2, 0)
                    else:
                        into[b][:, start * hop : (start + blocks) * hop, c] += total_blocks.reshape(count, blocks * hop)
                # Blocks only skipped frames reach: the graph's 0 + 0 + ... is +0.0 (adding it
                # changes nothing: the sums in ``into`` start from +0.0, so hold no -0.0).
                if into is None:
                    out_blocks[b, used + q - 1 :, :, c, :] = 0.0
    return out


def audible_frames(spans: np.ndarray, config: ModelConfig) -> np.ndarray:
    """How many of each segment's T frames reach an audible (non-zero) sample: the frames after
    them see only zeros, so their spectrum is zero.

    Args:
        spans: ``[B, L, channels]`` segment samples.
        config: ModelConfig.
    Returns:
        ``[B]`` int, each in ``[0, T]``.
    """
    flat = spans.reshape(spans.shape[0], -1)
    frames = np.zeros(spans.shape[0], np.int64)
    for b, row in enumerate(flat):
        last = _last_nonzero(row)
        if last >= 0:
            frames[b] = min(last // spans.shape[2] // config.frame_step + 1, config.T)
    return frames


def _last_nonzero(row: np.ndarray, block: int = 1 << 14) -> int:
    """Index of the last value of ``row`` that is not zero (NaN counts), or -1: scanned from the
    end in growing blocks, as audio's last sample is usually near it (a whole-array scan took
    5 ms per batch of 3 segments)."""
    end = row.shape[0]
    while end > 0:
        start = max(end - block, 0)
        found = np.flatnonzero(row[start:end])
        if found.size:
            return start + int(found[-1])
        end, block = start, block * 4
    return -1
