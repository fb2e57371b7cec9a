"""Probabilistic YIN (Mauch & Dixon, 2014) as librosa 0.11's ``pyin`` computes it, in numpy:
the same f0 in the same frames, about ten times cheaper.

librosa decodes pYIN's hidden Markov model (482 pitch bins at 0.1 semitone between 65 and 1050
Hz, each voiced or unvoiced: 964 states) with a dense Viterbi, 964 x 964 sums per frame: 90 % of
its time. Here:
- a pitch moves at most 10 semitones (50 bins) from one frame to the next, and every other
  transition has probability 0, i.e. log(0 + tiny) = LOG_TINY for all: a state's best
  predecessor is within 50 bins (banded max-plus products, 101 x 482) or, at LOG_TINY, the
  best state of the frame before;
- a voiced state whose bin had no YIN trough in the frame before sits ~708 (log tiny) below the
  rest: left out of the products whenever it cannot beat, for any state, the way there from the
  same bin's unvoiced state (a bound checked every frame; the few voiced bins that can are added
  one by one);
- the forward pass keeps values only; the backtrace recomputes the one predecessor the path
  needs from the whole transition column, with librosa's tie-break (the lowest state).
Every value kept is the same sum of the same floating-point numbers as librosa's, so the path is
the same; the YIN troughs' probabilities are librosa's arithmetic, vectorised over frames.
tests/test_vocal_pitch.py compares the f0 with librosa's on synthetic voices and real vocals.
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
BLAS_ROWS = 64  # OpenBLAS multiplies up to 9216 elements (92 rows of 100) in the calling thread
SPARSE_SOURCES = 32  # up to this many live voiced bins, the Viterbi adds each one's band alone
TINY = np.finfo(np.float64).tiny
LOG_TINY = np.log(TINY)


class PYin:
    """pYIN (librosa.pyin's algorithm) for one rate, frame length and hop: ``f0(y)`` of the frames
    of a piece of signal.

    Args:
        sr: Hz of the signal.
        frame_length: samples per frame.
        hop: samples between frames.
    """

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
        # scipy.stats.boltzmann.pmf(k, BOLTZMANN, N) = scale[N] * decay[k], each computed as scipy computes it.
        ranks = np.arange(frame_length)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.boltzmann_scale = (1 - np.exp(-BOLTZMANN)) / (1 - np.exp(-BOLTZMANN * ranks))
        self.boltzmann_decay = np.exp(-BOLTZMANN * ranks)
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
        log_transition = np.log(np.kron(switch, local) + TINY)  # [2n, 2n], from row to column
        self.log_transition_to = np.ascontiguousarray(log_transition.T)  # [to, from]: the backtrace reads whole rows
        # band[to][from half, d, j]: log transition from bin j + d - half of the 'from' half to bin j of the 'to' half.
        target = np.arange(n)
        self.bands = np.full((2, 2, width, n), -np.inf)
        for source in range(2):
            for to in range(2):
                block = log_transition[source * n : (source + 1) * n, to * n : (to + 1) * n]
                for d in range(width):
                    origin = target + d - half
                    inside = (origin >= 0) & (origin < n)
                    self.bands[to, source, d, inside] = block[origin[inside], target[inside]]
        self.log_init = np.log(np.full(2 * n, 1.0 / (2 * n)) + TINY)
        # voiced_bands[to half, k, e]: log transition from voiced bin k to bin k + e - half of the 'to' half.
        self.voiced_bands = np.full((2, n, width), -np.inf)
        for to in range(2):
            block = log_transition[:n, to * n : (to + 1) * n]
            for e in range(width):
                destination = target + e - half
                inside = (destination >= 0) & (destination < n)
                self.voiced_bands[to, inside, e] = block[target[inside], destination[inside]]
        self.voiced_reach = self.voiced_bands.max(axis=(0, 2))  # each voiced bin's likeliest transition
        self.unvoiced_to_voiced = np.diagonal(log_transition[n:, :n]).copy()  # unvoiced bin j -> voiced bin j

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

    def _trough_probabilities(self, yin: np.ndarray) -> tuple:
        """``(frames, lags, probabilities)`` [p] of the troughs of ``yin [n, lags]`` with a nonzero
        probability of being the period (librosa's __pyin_helper): the troughs below each
        threshold weighted by a Boltzmann prior on their order and the beta prior on the
        thresholds, the lowest trough of a frame also taking the thresholds no trough is under."""
        troughs = localmin(yin, axis=1)
        troughs[:, 0] = yin[:, 0] < yin[:, 1]
        frames, lags = np.nonzero(troughs)  # frame-major, lags ascending: the order of each frame's troughs
        if frames.size == 0:
            return frames, lags, np.zeros(0)
        heights = yin[frames, lags]
        probabilities = np.zeros(frames.shape[0])
        # The lowest trough of each frame (the first of equals) takes the thresholds no trough is under.
        starts = np.flatnonzero(np.diff(frames, prepend=-1))
        group = np.repeat(np.arange(starts.shape[0]), np.diff(np.append(starts, frames.shape[0])))
        candidates = np.flatnonzero(heights == np.minimum.reduceat(heights, starts)[group])
        lowest = candidates[np.flatnonzero(np.diff(group[candidates], prepend=-1))]
        # Troughs under some threshold: their rank among their frame's troughs under each one.
        under = np.flatnonzero(heights < self.thresholds[-1])
        if under.size:
            below = heights[under, None] < self.thresholds[None, :]  # [troughs, thresholds]
            frame_of = frames[under]
            first = np.flatnonzero(np.diff(frame_of, prepend=-1))
            own = np.repeat(np.arange(first.shape[0]), np.diff(np.append(first, under.shape[0])))
            running = np.cumsum(below, axis=0, dtype=np.int32)
            before = np.vstack([np.zeros((1, N_THRESHOLDS), np.int32), running[first[1:] - 1]])
            rank = running - before[own] - 1
            count = np.add.reduceat(below, first, axis=0, dtype=np.int32)[own]
            # scipy.stats.boltzmann.pmf(rank, BOLTZMANN, count), from tables of its two factors
            prior = np.where(below, self.boltzmann_scale[count] * self.boltzmann_decay[np.maximum(rank, 0)], 0.0)
            # librosa's matrix-vector product (OpenBLAS's), a frame's worth of rows at a time: a larger
            # one would wake OpenBLAS's own threads beside the job's worker threads.
            probabilities[under] = np.concatenate([prior[i : i + BLAS_ROWS].dot(self.beta_probs) for i in range(0, prior.shape[0], BLAS_ROWS)])
        probabilities[lowest] += NO_TROUGH_PROB * self.beta_below[N_THRESHOLDS - (heights[lowest, None] < self.thresholds[None, :]).sum(axis=1)]
        keep = probabilities != 0
        return frames[keep], lags[keep], probabilities[keep]

    def _log_observations(self, yin: np.ndarray) -> np.ndarray:
        """``[n, 2 n_bins]`` log(observation probability + TINY): voiced bins from the trough
        probabilities, unvoiced bins sharing what is left (librosa's sums, in its order)."""
        frames, lags, probabilities = self._trough_probabilities(yin)
        order = np.lexsort((frames, lags))  # librosa's order, lag-major: a later lag wins a shared bin
        frames, lags, probabilities = frames[order], lags[order], probabilities[order]
        # The parabolic shift at each trough (librosa interpolates every lag, 0 at both ends).
        last = yin.shape[1] - 1
        around = np.stack([yin[frames, np.maximum(lags - 1, 0)], yin[frames, lags], yin[frames, np.minimum(lags + 1, last)]])
        shifts = np.where((lags > 0) & (lags < last), parabolic_shifts(around, axis=0)[1], 0.0)
        bins = self.bins_per_octave * np.log2(self.sr / (self.min_period + lags + shifts) / FMIN_HZ)
        bins = np.clip(np.round(bins), 0, self.n_bins).astype(int)
        observations = np.zeros((2 * self.n_bins, yin.shape[0]))
        observations[bins, frames] = probabilities
        voiced = np.clip(np.sum(observations[: self.n_bins], axis=0), 0, 1)
        log_prob = np.full((yin.shape[0], 2 * self.n_bins), LOG_TINY)
        log_prob[:, self.n_bins :] = np.log((1 - voiced) / self.n_bins + TINY)[:, None]
        voiced_bins = np.flatnonzero(bins < self.n_bins)
        cells = (frames[voiced_bins], bins[voiced_bins])
        log_prob[cells] = np.log(observations[cells[1], cells[0]] + TINY)
        return log_prob

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
        best_by_half = best.reshape(2, n)
        for t in range(1, steps):
            previous = value[t - 1]
            inner[...] = previous.reshape(2, n)
            floor = previous.max() + LOG_TINY  # any state, at probability 0
            # No target's best is below its own unvoiced bin's way to it (nor the floor), so a voiced
            # state that cannot beat that for any target is left out: only the voiced bins with a
            # trough in the frame before live, a few of 482. The maxima are the same numbers.
            bound = max(floor, float(np.min(previous[n:] + self.unvoiced_to_voiced)))
            live = np.flatnonzero(previous[:n] + self.voiced_reach > bound)
            if live.size > SPARSE_SOURCES:
                np.add(sources, self.bands, out=sums)
                sums.reshape(2, 2 * width, n).max(axis=1, out=best_by_half)
            else:
                unvoiced = sums[:, 1]
                np.add(sources[1], self.bands[:, 1], out=unvoiced)
                unvoiced.max(axis=1, out=best_by_half)
                for k in live:
                    low, high = max(0, k - half), min(n, k + half + 1)
                    targets = best_by_half[:, low:high]
                    np.maximum(targets, previous[k] + self.voiced_bands[:, k, low - k + half : high - k + half], out=targets)
            np.maximum(best, floor, out=best)
            np.add(log_prob[t], best, out=value[t])
        states = np.empty(steps, dtype=np.int64)
        states[-1] = np.argmax(value[-1])
        for t in range(steps - 2, -1, -1):
            states[t] = np.argmax(value[t] + self.log_transition_to[states[t + 1]])
        return states

    def f0(self, y: np.ndarray) -> np.ndarray:
        """f0 of the frames of a piece (frame_length every hop, no padding: librosa.pyin(center=False));
        the piece is decoded on its own.

        Args:
            y: ``[k]`` float32 mono samples (a Framer piece).
        Returns:
            ``[frames]`` float32, Hz, NaN where unvoiced.
        """
        frames = np.lib.stride_tricks.sliding_window_view(y, self.frame_length)[:: self.hop]
        states = self._viterbi(self._log_observations(self._yin(frames)))
        f0 = np.where(states < self.n_bins, self.frequencies[states % self.n_bins], np.nan)
        return f0.astype(np.float32)
