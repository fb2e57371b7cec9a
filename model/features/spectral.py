"""Per-frame spectral statistics, accumulated over a stream of STFT frames."""
from __future__ import annotations

import librosa
import numpy as np

from stembeam.model.features.framing import ANALYSIS_RATE, HOP, N_FFT

N_MELS = 128
N_MFCC = 13
SILENT_FRAME_DB = -60.0  # frames quieter than this (frame RMS, dBFS: rms_db) are left out of the spectral means
RMS_FLOOR_DB = -120.0


# Mean of the squared analysis window (librosa.stft's periodic Hann: 3/8, -4.26 dB): what a
# windowed frame's power is scaled by, compensated so a frame's level is its samples' RMS.
WINDOW_POWER = float(np.mean(np.square(librosa.filters.get_window("hann", N_FFT, fftbins=True))))


def rms_db(magnitude: np.ndarray) -> np.ndarray:
    """Frame RMS in dBFS (20 log10 re 1.0 = full scale; a full-scale sine reads -3.01 dB) from the
    Hann-windowed ``magnitude [1 + N_FFT/2, n]``, ``[n]``, floored at -120: Parseval's sum (as
    librosa.feature.rms) divided by the window's power gain WINDOW_POWER, i.e. the RMS of the
    frame's 2048 samples (of the mono mix at 22.05 kHz) weighted by the window and normalised."""
    rms = librosa.feature.rms(S=magnitude, frame_length=N_FFT)[0].astype(np.float64) / np.sqrt(WINDOW_POWER)
    return (20.0 * np.log10(np.maximum(rms, 10 ** (RMS_FLOOR_DB / 20)))).astype(np.float32)


MEL_BASIS = librosa.filters.mel(sr=ANALYSIS_RATE, n_fft=N_FFT, n_mels=N_MELS)  # what librosa.feature.melspectrogram builds per call


def mel_db(power: np.ndarray) -> np.ndarray:
    """``[N_MELS, n]`` mel power in dB re 1.0 (no top_db clipping: it would depend on the block's maximum)."""
    return librosa.power_to_db(MEL_BASIS @ power, ref=1.0, top_db=None)


class SpectralStats:
    """Means over the non-silent frames: centroid (Hz, and its std), flatness, zero-crossing rate, 13 MFCCs."""

    def __init__(self):
        self.count = 0
        self._centroid = np.zeros(2)
        self._flatness = 0.0
        self._zcr = 0.0
        self._mfcc = np.zeros(N_MFCC)

    def add(self, y: np.ndarray, magnitude: np.ndarray, mel: np.ndarray, frame_db: np.ndarray) -> None:
        """``y``: the Framer piece the ``magnitude [1025, n]`` / ``mel [128, n]`` / ``frame_db [n]`` frames came from."""
        keep = frame_db > SILENT_FRAME_DB
        if not np.any(keep):
            return
        centroid = librosa.feature.spectral_centroid(S=magnitude[:, keep], sr=ANALYSIS_RATE, n_fft=N_FFT)[0]
        flatness = librosa.feature.spectral_flatness(S=magnitude[:, keep])[0]
        zcr = librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP, center=False)[0][keep]
        mfcc = librosa.feature.mfcc(S=mel[:, keep], n_mfcc=N_MFCC)
        self.count += int(keep.sum())
        self._centroid += [centroid.sum(), np.square(centroid).sum()]
        self._flatness += float(flatness.sum())
        self._zcr += float(zcr.sum())
        self._mfcc += mfcc.sum(axis=1)

    def summary(self) -> dict:
        """Source-level values; all None when every frame was silent."""
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
