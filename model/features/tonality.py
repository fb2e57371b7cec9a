"""Key (Krumhansl-Schmuckler over summed chroma) and tuning, accumulated over STFT frames."""
from __future__ import annotations

import librosa
import numpy as np

from stembeam.model.features.framing import ANALYSIS_RATE, N_FFT

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
CHROMA_BASIS = librosa.filters.chroma(sr=ANALYSIS_RATE, n_fft=N_FFT, tuning=0.0)  # chroma_stft's filter bank at A440
TUNING_BINS = np.linspace(-0.5, 0.5, 101)  # librosa.pitch_tuning's histogram at resolution 0.01 semitone


class Tonality:
    """Sums the energy chroma (A440, no per-frame normalisation) and a histogram of spectral peaks'
    deviation from equal temperament (librosa.estimate_tuning's, over all frames)."""

    def __init__(self):
        self.chroma = np.zeros(12)
        self._tuning = np.zeros(TUNING_BINS.shape[0] - 1)

    def add(self, magnitude: np.ndarray) -> None:
        """``magnitude [1 + N_FFT/2, n]`` STFT frames."""
        self.chroma += CHROMA_BASIS @ np.square(magnitude).sum(axis=1)
        pitch, mag = librosa.piptrack(S=magnitude, sr=ANALYSIS_RATE, n_fft=N_FFT)
        found = pitch > 0
        if np.any(found):
            strong = pitch[found & (mag >= np.median(mag[found]))]
            residual = np.mod(12 * librosa.hz_to_octs(strong), 1.0)
            residual[residual >= 0.5] -= 1.0
            self._tuning += np.histogram(residual, TUNING_BINS)[0]

    def merge(self, other: "Tonality") -> None:
        """Add another source's sums (the non-vocal stems of a 4/5-stems model, as energies)."""
        self.chroma += other.chroma
        self._tuning += other._tuning

    def summary(self) -> dict:
        """Key tonic / mode / strength (Pearson r with the best profile), tuning (cents), chroma_mean (max 1)."""
        empty = {"key_tonic": None, "key_mode": None, "key_strength": None, "tuning_cents": None, "chroma_mean": None}
        if np.ptp(self.chroma) <= 0:  # silence, or a flat chroma: no key to read
            return empty
        chroma = self.chroma / self.chroma.max()
        tonic, mode, strength = estimate_key(chroma)
        tuning = float(100 * TUNING_BINS[np.argmax(self._tuning)]) if self._tuning.any() else None
        return {"key_tonic": tonic, "key_mode": mode, "key_strength": strength, "tuning_cents": tuning, "chroma_mean": [float(v) for v in chroma]}


def estimate_key(chroma: np.ndarray) -> tuple:
    """``(tonic, "major"|"minor", r)`` for a 12-bin chroma vector (C first): the rotation of the
    Krumhansl-Kessler profile it correlates best with."""
    best = (-2.0, 0, "major")
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best[0]:
                best = (r, tonic, mode)
    return PITCH_CLASSES[best[1]], best[2], best[0]
