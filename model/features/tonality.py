"""Key (Krumhansl-Schmuckler over summed chroma) and tuning, accumulated over STFT frames.

The chroma filter bank and the spectral peaks behind the tuning are librosa 0.11's
(filters.chroma, piptrack as estimate_tuning calls it), computed in numpy (filters.py says why
librosa is not imported); tests/test_feature_reference.py compares them with librosa's.
"""
from __future__ import annotations

import numpy as np

from stembeam.model.features.filters import chroma_filters, hz_to_octs
from stembeam.model.features.framing import ANALYSIS_RATE, N_FFT
from stembeam.model.features.peaks import localmax, parabolic_shifts

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
CHROMA_BASIS = chroma_filters(ANALYSIS_RATE, N_FFT)  # chroma_stft's filter bank at A440
TUNING_BINS = np.linspace(-0.5, 0.5, 101)  # librosa.pitch_tuning's histogram at resolution 0.01 semitone
PEAK_FMIN_HZ, PEAK_FMAX_HZ = 150.0, 4000.0  # piptrack's band
PEAK_THRESHOLD = 0.1  # piptrack's: a peak is at least this share of its frame's largest magnitude
# The bins of the band, and one more on each side: all a peak's test and interpolation read.
_FREQUENCIES = np.fft.rfftfreq(N_FFT, 1.0 / ANALYSIS_RATE)
_BAND = np.flatnonzero((PEAK_FMIN_HZ <= _FREQUENCIES) & (_FREQUENCIES < min(PEAK_FMAX_HZ, ANALYSIS_RATE / 2)))
_LOW, _HIGH = int(_BAND[0]) - 1, int(_BAND[-1]) + 2


def spectral_peaks(magnitude: np.ndarray) -> tuple:
    """The interpolated spectral peaks between 150 Hz and 4 kHz of frames that reach a tenth of
    their frame's maximum (librosa.piptrack's nonzero entries, in no particular order).

    Args:
        magnitude: ``[frames, 1025]`` float32.
    Returns:
        ``(frequency_hz [p], magnitude [p])`` float32.
    """
    band = magnitude[:, _LOW:_HIGH]
    floor = PEAK_THRESHOLD * magnitude.max(axis=1, keepdims=True)
    frames, bins = np.nonzero(localmax(band * (band > floor), axis=1)[:, 1:-1])
    bins += 1  # within band
    # The parabola through each peak and its neighbours (piptrack interpolates every bin, then keeps these).
    before, here, after = band[frames, bins - 1], band[frames, bins], band[frames, bins + 1]
    shift = parabolic_shifts(np.stack([before, here, after]), axis=0)[1]
    slope = (after - before) / 2.0  # np.gradient
    frequency = ((bins + _LOW) + shift) * float(ANALYSIS_RATE) / N_FFT
    return frequency.astype(np.float32), (here + 0.5 * slope * shift).astype(np.float32)


class Tonality:
    """Sums the energy chroma (A440, no per-frame normalisation) and a histogram of spectral peaks'
    deviation from equal temperament (librosa.estimate_tuning's, over all frames)."""

    def __init__(self):
        self.chroma = np.zeros(12)
        self._tuning = np.zeros(TUNING_BINS.shape[0] - 1)

    def add(self, power: np.ndarray, magnitude: np.ndarray) -> None:
        """Add ``power`` and ``magnitude`` ``[frames, 1025]`` float32 of the same STFT frames."""
        self.chroma += CHROMA_BASIS @ power.sum(axis=0)
        pitch, mag = spectral_peaks(magnitude)
        found = pitch > 0
        if np.any(found):
            strong = pitch[found & (mag >= np.median(mag[found]))]
            residual = np.mod(12 * hz_to_octs(strong), 1.0)
            residual[residual >= 0.5] -= 1.0
            self._tuning += np.histogram(residual, TUNING_BINS)[0]

    def merge(self, other: "Tonality") -> None:
        """Add another Tonality's sums (the non-vocal stems of a 4/5-stems model, as energies)."""
        self.chroma += other.chroma
        self._tuning += other._tuning

    def summary(self) -> dict:
        """The source's key and tuning.

        Returns:
            ``{key_tonic, key_mode, key_strength}`` (Pearson r with the best profile),
            ``tuning_cents`` and ``chroma_mean`` ([12], max 1); all None for a flat chroma.
        """
        empty = {"key_tonic": None, "key_mode": None, "key_strength": None, "tuning_cents": None, "chroma_mean": None}
        if np.ptp(self.chroma) <= 0:  # silence, or a flat chroma: no key to read
            return empty
        chroma = self.chroma / self.chroma.max()
        tonic, mode, strength = estimate_key(chroma)
        tuning = float(100 * TUNING_BINS[np.argmax(self._tuning)]) if self._tuning.any() else None
        return {"key_tonic": tonic, "key_mode": mode, "key_strength": strength, "tuning_cents": tuning, "chroma_mean": [float(v) for v in chroma]}


def estimate_key(chroma: np.ndarray) -> tuple:
    """The key whose Krumhansl-Kessler profile rotation correlates best with a chroma vector.

    Args:
        chroma: ``[12]`` float, C first.
    Returns:
        ``(tonic name, "major" | "minor", Pearson r)``.
    """
    best = (-2.0, 0, "major")
    for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)):
        for tonic in range(12):
            r = float(np.corrcoef(chroma, np.roll(profile, tonic))[0, 1])
            if r > best[0]:
                best = (r, tonic, mode)
    return PITCH_CLASSES[best[1]], best[2], best[0]
