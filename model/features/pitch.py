"""Probabilistic YIN (Mauch & Dixon, 2014) as librosa 0.11's ``pyin`` computes it, in numpy,
with the same f0 for the same frames and a Viterbi search ~10x cheaper.

librosa decodes pYIN's hidden Markov model (482 pitch bins at 0.1 semitone between 65 and 1050
Hz, each voiced or unvoiced: 964 states) with a dense Viterbi: 964 x 964 sums per frame, 90 % of
its time. A pitch moves at most 10 semitones (50 bins) from one frame to the next: every other
transition has probability 0, i.e. log(0 + tiny) = LOG_TINY, the same for all. So each state's
best predecessor is either within 50 bins (in its own half or the other: four banded max-plus
products, 101 x 482 each) or, at LOG_TINY, the overall best state of the frame before. The
forward pass keeps only values; the backtrace recomputes the one predecessor the path needs
from the full transition column, with librosa's tie-break (the lowest state index). Each
value is the same sum of the same floating-point numbers as librosa's, so the path is the
same. tests/test_vocal_pitch.py compares both on synthetic voices and real vocal stems.
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.signal
import scipy.special

from stembeam.model.features.peaks import localmin, parabolic_shifts

FMIN_HZ, FMAX_HZ = 65.0, 1050.0  # C2..C6: the singing range
N_THRESHOLDS = 100
BETA = (2, 18)  # the prior over the YIN thresholds
BOLTZMANN = 2  # the prior over the troughs below a threshold: the first one most likely
RESOLUTION = 0.1  # semitones per pitch bin
MAX_TRANSITION_RATE = 35.92  # octaves per second
SWITCH_PROB = 0.01  # voiced <-> unvoiced per frame
NO_TROUGH_PROB = 0.01
TINY = np.finfo(np.float64).tiny
LOG_TINY = np.log(TINY)


class PYin:
    """pYIN for one rate, frame length and hop: ``f0(y)`` of the frames of a piece of signal."""

    def __init__(self, sr: int, frame_length: int, hop: int):
        self.sr, self.frame_length, self.hop = sr, frame_length, hop
        self.min_period = int(np.floor(sr / FMAX_HZ))
        self.max_period = min(int(np.ceil(sr / FMIN_HZ)), frame_length - 1)
        self.fft_size = scipy.fft.next_fast_len(2 * frame_length - 1, real=True)
        thresholds = np.linspace(0, 1, N_THRESHOLDS + 1)
        self.thresholds = thresholds[1:]
        self.beta_probs = np.diff(scipy.special.betainc(BETA[0], BETA[1], thresholds))  # scipy.stats.beta.cdf
        # sum(beta_probs[:m]) for m thresholds, summed as numpy sums a slice.
        self.beta_below = np.array([np.sum(self.beta_probs[:m]) for m in range(N_THRESHOLDS + 1)])
        bins_per_semitone = int(np.ceil(1.0 / RESOLUTION))
        self.bins_per_octave = 12 * bins_per_semitone
        self.n_bins = int(np.floor(self.bins_per_octave * np.log2(FMAX_HZ / FMIN_HZ))) + 1
        self.frequencies = FMIN_HZ * 2 ** (np.arange(self.n_bins) / self.bins_per_octave)
        max_semitones_per_frame = round(MAX_TRANSITION_RATE * 12 * hop / sr)
        self.width = max_semitones_per_frame * bins_per_semitone + 1
        self._transitions()

    def _transitions(self) -> None:
        """librosa.sequence.transition_local (triangle, no wrap) in each half, scaled by
        transition_loop(2, 1 - SWITCH_PROB) between halves (np.kron), as logs; and as bands."""
        n, width, half = self.n_bins, self.width, self.width // 2
        window = scipy.signal.get_window("triangle", width, fftbins=False)
        padded = np.zeros(n)
        left = (n - width) // 2  # librosa.util.pad_center
        padded[left : left + width] = window
        local = np.zeros((n, n))
        for i in range(n):
            row = np.roll(padded, n // 2 + i + 1)
            row[min(n, i + width // 2 + 1) :] = 0
            row[: max(0, i - width // 2)] = 0
            local[i] = row
        local /= local.sum(axis=1, keepdims=True)
        stay = 1 - SWITCH_PROB
        switch = np.array([[stay, 1.0 - stay], [1.0 - stay, stay]])  # librosa.sequence.transition_loop(2, stay)
        self.log_transition = np.log(np.kron(switch, local) + TINY)  # [2n, 2n], from row to column
        self.log_transition_to = np.ascontiguousarray(self.log_transition.T)  # [to, from]: the backtrace reads whole rows
        # band[to][from half, d, j]: log transition from bin j + d - half of the 'from' half to bin j of the 'to' half.
        target = np.arange(n)
        self.bands = np.full((2, 2, width, n), -np.inf)
        for source in range(2):
            for to in range(2):
                block = self.log_transition[source * n : (source + 1) * n, to * n : (to + 1) * n]
                for d in range(width):
                    origin = target + d - half
                    inside = (origin >= 0) & (origin < n)
                    self.bands[to, source, d, inside] = block[origin[inside], target[inside]]
        self.log_init = np.log(np.full(2 * n, 1.0 / (2 * n)) + TINY)

    def _yin(self, frames: np.ndarray) -> np.ndarray:
        """``[n, lags]`` float64 cumulative mean normalised difference of ``frames [n, frame_length]``, lags min..max period."""
        spectrum = scipy.fft.rfft(frames, n=self.fft_size, axis=1)
        acf = scipy.fft.irfft(np.square(spectrum.real) + np.square(spectrum.imag), n=self.fft_size, axis=1)[:, : self.max_period + 1]
        energy = np.cumsum(np.square(frames), axis=1)
        energy[:, 0] = 0
        difference = np.empty_like(energy[:, : self.max_period + 1])
        difference[:, 0] = 0
        difference[:, 1:] = 2 * (acf[:, 0:1] - acf[:, 1:]) - energy[:, : self.max_period]
        lags = np.arange(1, self.max_period + 1)
        mean = np.cumsum(difference[:, 1:], axis=1) / lags
        return difference[:, self.min_period :] / (mean[:, self.min_period - 1 :] + TINY)

    def _trough_probabilities(self, yin: np.ndarray) -> np.ndarray:
        """``[n, lags]`` probability that each lag is the period (librosa's __pyin_helper): the
        troughs below each threshold weighted by a Boltzmann prior on their order and the beta
        prior on the thresholds, the lowest trough also taking the thresholds no trough is under."""
        troughs = localmin(yin, axis=1)
        troughs[:, 0] = yin[:, 0] < yin[:, 1]
        frames, lags = np.nonzero(troughs)  # frame-major, lags ascending: the order of each frame's troughs
        probabilities = np.zeros_like(yin)
        if frames.size == 0:
            return probabilities
        heights = yin[frames, lags]
        below = heights[:, None] < self.thresholds[None, :]  # [troughs, thresholds]
        starts = np.flatnonzero(np.diff(frames, prepend=-1))
        group = np.repeat(np.arange(starts.shape[0]), np.diff(np.append(starts, frames.shape[0])))
        running = np.cumsum(below, axis=0)
        before = np.vstack([np.zeros((1, N_THRESHOLDS), running.dtype), running[starts[1:] - 1]])
        position = running - before[group] - 1  # each trough's rank among its frame's troughs under the threshold
        count = np.add.reduceat(below, starts, axis=0, dtype=np.int64)[group]
        with np.errstate(divide="ignore", invalid="ignore"):
            prior = (1 - np.exp(-BOLTZMANN)) / (1 - np.exp(-BOLTZMANN * count)) * np.exp(-BOLTZMANN * position)  # scipy.stats.boltzmann.pmf
        prior[~below] = 0
        probs = prior.dot(self.beta_probs)
        # The lowest trough of each frame (the first of equals).
        lowest = np.minimum.reduceat(heights, starts)[group]
        candidates = np.flatnonzero(heights == lowest)
        first = candidates[np.flatnonzero(np.diff(group[candidates], prepend=-1))]
        probs[first] += NO_TROUGH_PROB * self.beta_below[N_THRESHOLDS - below[first].sum(axis=1)]
        probabilities[frames, lags] = probs
        return probabilities

    def _observations(self, yin: np.ndarray) -> np.ndarray:
        """``[2 n_bins, n]`` observation probabilities: voiced bins from the trough
        probabilities, unvoiced bins share what is left (librosa's layout and sums)."""
        probabilities = self._trough_probabilities(yin)
        shifts = parabolic_shifts(yin, axis=1)
        lag_index, frame_index = np.nonzero(probabilities.T)  # librosa's order: lag-major, so a later lag wins a shared bin
        periods = self.min_period + lag_index + shifts[frame_index, lag_index]
        bins = self.bins_per_octave * np.log2(self.sr / periods / FMIN_HZ)
        bins = np.clip(np.round(bins), 0, self.n_bins).astype(int)
        observations = np.zeros((2 * self.n_bins, yin.shape[0]))
        observations[bins, frame_index] = probabilities[frame_index, lag_index]
        voiced = np.clip(np.sum(observations[: self.n_bins], axis=0, keepdims=True), 0, 1)
        observations[self.n_bins :] = (1 - voiced) / self.n_bins
        return observations

    def _viterbi(self, log_prob: np.ndarray) -> np.ndarray:
        """``[n]`` most likely states (librosa.sequence.viterbi) of ``log_prob [n, 2 n_bins]``."""
        steps, n, width, half = log_prob.shape[0], self.n_bins, self.width, self.width // 2
        value = np.empty_like(log_prob)
        value[0] = log_prob[0] + self.log_init
        padded = np.full((2, n + 2 * half), -np.inf)
        inner = padded[:, half : half + n]
        # sources[h, d, j]: state j + d - half of half h of the frame before (-inf beyond the bins)
        sources = np.lib.stride_tricks.sliding_window_view(padded, n, axis=1)[:, :width]
        sums = np.empty((2, 2, width, n))
        best = np.empty(2 * n)
        for t in range(1, steps):
            previous = value[t - 1]
            inner[...] = previous.reshape(2, n)
            np.add(sources, self.bands, out=sums)
            sums.reshape(2, 2 * width, n).max(axis=1, out=best.reshape(2, n))
            np.maximum(best, previous.max() + LOG_TINY, out=best)  # any state, at probability 0
            np.add(log_prob[t], best, out=value[t])
        states = np.empty(steps, dtype=np.int64)
        states[-1] = np.argmax(value[-1])
        for t in range(steps - 2, -1, -1):
            states[t] = np.argmax(value[t] + self.log_transition_to[states[t + 1]])
        return states

    def f0(self, y: np.ndarray) -> np.ndarray:
        """``[n]`` float32 f0 (Hz, NaN where unvoiced) of the frames of ``y`` (frame_length every
        hop, no padding: librosa.pyin(center=False)); the piece is decoded on its own."""
        frames = np.lib.stride_tricks.sliding_window_view(y, self.frame_length)[:: self.hop]
        observations = self._observations(self._yin(frames))
        states = self._viterbi(np.log(observations + TINY).T)
        f0 = np.where(states < self.n_bins, self.frequencies[states % self.n_bins], np.nan)
        return f0.astype(np.float32)
