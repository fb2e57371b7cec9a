"""One STFT per block of frames, shared by every feature that reads a spectrum, and the per-frame
spectral statistics accumulated over a stream of such blocks.

The definitions are librosa 0.11's (stft, feature.rms / melspectrogram / spectral_centroid /
spectral_flatness / zero_crossing_rate / mfcc, power_to_db), computed in numpy and scipy
(filters.py says why librosa is not imported); tests/test_feature_reference.py compares them.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.sparse

from stembeam.model.features.filters import fft_frequencies, hann_window, mel_filters
from stembeam.model.features.framing import ANALYSIS_RATE, HOP, N_FFT

N_MELS = 128
N_MFCC = 13
SILENT_FRAME_DB = -60.0  # frames quieter than this (frame RMS, dBFS: rms_db) are left out of the spectral means
RMS_FLOOR_DB = -120.0
AMIN = 1e-10  # power floor of the dB and flatness values (librosa's amin)
ZERO_CROSSING_THRESHOLD = np.float32(1e-10)  # samples this close to 0 count as 0 (librosa.zero_crossings)

WINDOW = hann_window(N_FFT).astype(np.float32)  # librosa.stft's periodic Hann
# Mean of the squared analysis window (3/8, -4.26 dB): what a windowed frame's power is scaled
# by, compensated so a frame's level is its samples' RMS.
WINDOW_POWER = float(np.mean(np.square(hann_window(N_FFT))))
FREQUENCIES = fft_frequencies(ANALYSIS_RATE, N_FFT).astype(np.float32)
# The mel filters overlap only their neighbours: as a sparse matrix the product costs 1/60 of a dense one.
MEL_BASIS = scipy.sparse.csr_matrix(mel_filters(ANALYSIS_RATE, N_FFT, N_MELS))


def power_spectrum(y: np.ndarray) -> np.ndarray:
    """Power of the Hann-windowed STFT frames (N_FFT every HOP, no padding) of a Framer piece.

    Args:
        y: ``[k]`` float32 mono samples at ANALYSIS_RATE.
    Returns:
        ``[frames, 1025]`` float32 (bins = 1 + N_FFT / 2), frame-major, each frame's bins contiguous.
    """
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP]
    spectrum = scipy.fft.rfft(frames * WINDOW, axis=1, overwrite_x=True)
    return np.square(spectrum.real) + np.square(spectrum.imag)


def rms_db(power: np.ndarray) -> np.ndarray:
    """Frame RMS in dBFS (20 log10 re 1.0 = full scale; a full-scale sine reads -3.01 dB), floored
    at -120: Parseval's sum (as librosa.feature.rms) divided by the window's power gain
    WINDOW_POWER, i.e. the RMS of the frame's 2048 samples (of the mono mix at 22.05 kHz)
    weighted by the window and normalised.

    Args:
        power: ``[frames, 1025]`` (power_spectrum).
    Returns:
        ``[frames]`` float32.
    """
    # Every bin counts twice (its negative frequency) except DC and Nyquist.
    total = power.sum(axis=1) - 0.5 * (power[:, 0] + power[:, -1])
    rms = np.sqrt(2 * total.astype(np.float64) / N_FFT**2 / WINDOW_POWER)
    return (20.0 * np.log10(np.maximum(rms, 10 ** (RMS_FLOOR_DB / 20)))).astype(np.float32)


def mel_db(power: np.ndarray) -> np.ndarray:
    """Mel power in dB re 1.0: ``power [frames, 1025]`` -> ``[N_MELS, frames]`` float32 (no top_db clipping: it would depend on the block's maximum)."""
    return 10.0 * np.log10(np.maximum(AMIN, MEL_BASIS @ power.T))


def zero_crossing_rates(y: np.ndarray, frames: int) -> np.ndarray:
    """Zero-crossing rate of each frame: the share of the N_FFT - 1 sample pairs whose signs differ
    (samples within 1e-10 of 0 count as positive), over N_FFT.

    Args:
        y: a Framer piece, ``[k]`` float32.
        frames: its frames.
    Returns:
        ``[frames]`` float.
    """
    negative = y < -ZERO_CROSSING_THRESHOLD  # librosa's sign bit of y, with y within the threshold set to +0
    crossings = np.concatenate([[0], np.cumsum(negative[1:] != negative[:-1], dtype=np.int32)])
    starts = np.arange(frames) * HOP
    return (crossings[starts + N_FFT - 1] - crossings[starts]) / N_FFT


class SpectralStats:
    """Means over the non-silent frames: centroid (Hz, and its std), flatness, zero-crossing rate, 13 MFCCs."""

    def __init__(self):
        self.count = 0
        self._centroid = np.zeros(2)
        self._flatness = 0.0
        self._zcr = 0.0
        self._mfcc = np.zeros(N_MFCC)

    def add(self, y: np.ndarray, power: np.ndarray, magnitude: np.ndarray, mel: np.ndarray, frame_db: np.ndarray) -> None:
        """Add a piece's frames.

        Args:
            y: the Framer piece ``[k]`` the frames came from.
            power, magnitude: ``[frames, 1025]`` float32.
            mel: ``[N_MELS, frames]`` dB (mel_db).
            frame_db: ``[frames]`` dBFS (rms_db); silent frames are left out of the means.
        """
        keep = frame_db > SILENT_FRAME_DB
        if not np.any(keep):
            return
        if not keep.all():  # (most frames of music are kept: no copies then)
            power, magnitude, mel = power[keep], magnitude[keep], mel[:, keep]
        total = magnitude.sum(axis=1).astype(np.float64)
        # einsum, not BLAS: OpenBLAS would wake its own threads beside the job's worker threads.
        centroid = np.einsum("ij,j->i", magnitude, FREQUENCIES).astype(np.float64) / np.where(total < np.finfo(np.float32).tiny, 1.0, total)  # librosa.util.normalize(norm=1)
        floored = np.maximum(AMIN, power)
        flatness = np.exp(np.mean(np.log(floored), axis=1)) / np.mean(floored, axis=1)
        zcr = zero_crossing_rates(y, keep.shape[0])[keep]
        mfcc = scipy.fft.dct(mel, type=2, norm="ortho", axis=0)[:N_MFCC]
        self.count += int(keep.sum())
        self._centroid += [centroid.sum(), np.square(centroid).sum()]
        self._flatness += float(flatness.sum())
        self._zcr += float(zcr.sum())
        self._mfcc += mfcc.sum(axis=1)

    def summary(self) -> dict:
        """Source-level values.

        Returns:
            ``{column: value}`` of the ``sources`` table's spectral columns (centroid mean/std,
            flatness, zero-crossing rate, ``mfcc_mean`` [13]); all None when every frame was silent.
        """
        if self.count == 0:
            keys = ("spectral_centroid_hz_mean", "spectral_centroid_hz_std", "spectral_flatness_mean", "zero_crossing_rate_mean", "mfcc_mean")
            return dict.fromkeys(keys)
        mean = self._centroid[0] / self.count
        std = float(np.sqrt(max(0.0, self._centroid[1] / self.count - mean * mean)))
        return {
            "spectral_centroid_hz_mean": float(mean),
            "spectral_centroid_hz_std": std,
            "spectral_flatness_mean": self._flatness / self.count,
            "zero_crossing_rate_mean": self._zcr / self.count,
            "mfcc_mean": [float(v) for v in self._mfcc / self.count],
        }
