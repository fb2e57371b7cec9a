"""Spectral math of Spleeter's exported inference graph, in numpy.

Conventions: waveforms are ``[samples, channels]`` float32; STFTs are
``[frames, bins, channels]`` complex64 with ``bins = frame_length // 2 + 1``.
Frame ``k`` covers samples ``[k * hop, k * hop + frame_length)``; the graph pads
the end with zeros and computes ``ceil(n / hop)`` frames (no leading zero frame).
"""
from __future__ import annotations

import numpy as np
import scipy.fft

EPSILON = 1e-10
# Sum of squared periodic Hann windows at 75 % overlap is 1.5; the graph multiplies by 2/3.
WINDOW_COMPENSATION_FACTOR = 2.0 / 3.0


def hann_window(frame_length: int) -> np.ndarray:
    """``[frame_length]`` float32 periodic Hann window, as ``tf.signal.hann_window(periodic=True)``."""
    n = np.arange(frame_length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / frame_length)).astype(np.float32)


def n_frames(n_samples: int, frame_step: int) -> int:
    """Frames the graph computes for ``n_samples`` (``ceil(n_samples / frame_step)``)."""
    return -(-n_samples // frame_step)


def stft(waveform: np.ndarray, frame_length: int, frame_step: int, frames: int | None = None) -> np.ndarray:
    """STFT as the graph computes it (``tf.signal.stft(..., pad_end=True)``, periodic Hann window).

    Args:
        waveform: ``[samples, channels]`` float32.
        frame_length: N.
        frame_step: hop.
        frames: frames to compute (None: ``ceil(samples / hop)``); the signal is zero padded at
            the end to cover them.
    Returns:
        ``[frames, bins, channels]`` complex64, ``bins = N // 2 + 1``.
    """
    if frames is None:
        frames = n_frames(waveform.shape[0], frame_step)
    needed = (frames - 1) * frame_step + frame_length if frames > 0 else 0
    padded = np.zeros((max(needed, waveform.shape[0]), waveform.shape[1]), dtype=np.float32)
    padded[: waveform.shape[0]] = waveform
    if frames == 0:
        return np.zeros((0, frame_length // 2 + 1, waveform.shape[1]), dtype=np.complex64)
    # [C, frames, frame_length] view without copying the signal
    framed = np.lib.stride_tricks.sliding_window_view(padded.T, frame_length, axis=1)[:, : (frames - 1) * frame_step + 1 : frame_step]
    # scipy.fft keeps float32 in single precision (numpy would compute in float64). One worker:
    # with several, results changed in the last bit when other threads used scipy.fft at the
    # same time (seen as +-1 LSB in the multi-threaded pipeline's --mwf stems).
    spec = scipy.fft.rfft(framed * hann_window(frame_length), axis=-1, workers=1)
    return np.ascontiguousarray(spec.transpose(1, 2, 0), dtype=np.complex64)


def istft(spec: np.ndarray, frame_length: int, frame_step: int) -> np.ndarray:
    """Overlap-added inverse STFT: the forward window times 2/3, as the exported graph.

    Args:
        spec: ``[frames, bins, channels]`` complex.
        frame_length: N.
        frame_step: hop (N must be a multiple of it).
    Returns:
        ``[(frames - 1) * hop + N, channels]`` float32; the caller crops (the graph keeps ``[0, n)``).
    """
    frames, _, channels = spec.shape
    length = (frames - 1) * frame_step + frame_length if frames else 0
    out = np.zeros((length + frame_length, channels), dtype=np.float32)
    if frames == 0:
        return out[:0]
    time_frames = scipy.fft.irfft(spec.astype(np.complex64, copy=False), n=frame_length, axis=1, workers=1).astype(np.float32, copy=False)  # see stft
    time_frames *= (hann_window(frame_length) * WINDOW_COMPENSATION_FACTOR)[None, :, None]
    # Frames r, r+s, r+2s... (s = frame_length // hop) do not overlap: add each such set at once.
    stride = frame_length // frame_step
    for r in range(stride):
        group = time_frames[r::stride]
        if len(group) == 0:
            continue
        start = r * frame_step
        out[start : start + len(group) * frame_length] += group.reshape(-1, channels)
    return out[:length]


def extend_bins(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Zero-extend masks or magnitudes from F bins to all bins (mask_extension ``zeros``).

    Args:
        x: ``[frames, F, ...]``.
        n_bins: the bins wanted (N // 2 + 1).
    Returns:
        ``[frames, n_bins, ...]``, same dtype.
    """
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, n_bins - x.shape[1])
    return np.pad(x, pad)
