"""Streaming ITU-R BS.1770-4 loudness (EBU R128): integrated loudness, loudness range, short-term series.

The K-weighting filter is pyloudnorm's (its two biquads, for any sample rate); it runs with its
state carried from block to block, so a source is measured block by block and equals
pyloudnorm's whole-array ``integrated_loudness`` and ``loudness_range``. What is kept per track:
the channel-weighted sum of squares of every 10 ms tick of filtered signal (8 bytes per 10 ms).

Ticks lie on exact sample positions: tick ``k`` is samples ``[k * rate // 100, (k + 1) * rate // 100)``
(220 or 221 samples at 22.05 kHz), so a window of ticks starting at tick ``k`` starts at ``k`` x 10 ms
within one sample at any rate, and a window's mean square is its sum over its exact sample count.
"""
from __future__ import annotations

import numpy as np
import pyloudnorm
import scipy.signal

CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 weights for L, R, C, Ls, Rs
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LRA_RELATIVE_GATE_LU = -20.0
TICKS_PER_S = 100
TICK_S = 1.0 / TICKS_PER_S  # energies are kept per 10 ms: gating blocks (400 ms / 100 ms) and short-term windows (3 s / 90 ms) are whole ticks
BLOCK_TICKS, BLOCK_STEP_TICKS = 40, 10
# pyloudnorm's loudness_range: 3 s windows every 90 ms (overlap 0.97), 1.5 s of silence appended.
SHORT_TERM_TICKS, SHORT_TERM_STEP_TICKS, LRA_TAIL_TICKS = 300, 9, 150


def _lufs(mean_square):
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(mean_square)


class LoudnessMeter:
    """BS.1770 / EBU loudness of a stream: feed ``[k, channels]`` blocks with ``write``, then read the
    measures. Also keeps the sample peak and the plain mean square (for ``rms_dbfs`` and ``share_db``).

    Args:
        sample_rate: Hz of the blocks (the K-weighting filters are designed for it).
        channels: channels of the blocks.
    """

    def __init__(self, sample_rate: int, channels: int):
        if channels > len(CHANNEL_GAINS):
            raise ValueError(f"{channels} channels: BS.1770 weights are defined for up to 5")
        meter = pyloudnorm.Meter(sample_rate)
        # The two biquads as one second-order-section cascade (one scipy call per block).
        stages = list(meter._filters.values())
        self._sos = np.stack([np.concatenate([f.b * f.passband_gain, f.a]) / f.a[0] for f in stages]).astype(np.float32)
        self._state = np.zeros((len(stages), 2, channels), np.float32)
        self._gains = np.asarray(CHANNEL_GAINS[:channels], np.float32)
        self._unit_gains = bool(np.all(self._gains == 1.0))
        self.sample_rate = sample_rate
        self.channels = channels
        self._carry = np.zeros(0, np.float32)  # weighted squares of the unfinished tick
        self._ticks = []  # weighted sum of squares per finished tick, in pieces
        self._finished = 0  # ticks finished: the carry starts at sample self._boundary(self._finished)
        self.samples = 0
        self.peak = 0.0
        self.sum_squares = 0.0  # unweighted, all channels, unfiltered

    def write(self, block: np.ndarray) -> None:
        """Feed ``block [k, channels]`` float samples (filtered in float32: 1e-6 relative is far below 0.01 LU)."""
        block = np.asarray(block, dtype=np.float32)
        if block.shape[0] == 0:
            return
        self.samples += block.shape[0]
        self.peak = max(self.peak, float(block.max()), -float(block.min()))
        # einsum, not BLAS: OpenBLAS would wake its own threads beside the job's worker threads.
        self.sum_squares += float(np.einsum("ij,ij->", block, block))
        filtered, self._state = scipy.signal.sosfilt(self._sos, block, axis=0, zi=self._state)
        weighted = np.einsum("ij,ij->i", filtered, filtered) if self._unit_gains else np.einsum("ij,ij,j->i", filtered, filtered, self._gains)
        weighted = np.concatenate([self._carry, weighted])
        start = self._boundary(self._finished)
        end = start + weighted.shape[0]
        # The last tick boundary at or before ``end``: boundary(k) <= end <=> k * rate < TICKS_PER_S * (end + 1).
        last = (TICKS_PER_S * (end + 1) - 1) // self.sample_rate
        if last > self._finished:
            edges = self._boundary(np.arange(self._finished, last + 1)) - start
            self._ticks.append(np.add.reduceat(weighted[: edges[-1]], edges[:-1], dtype=np.float64))
            self._carry = weighted[edges[-1] :]
            self._finished = int(last)
        else:
            self._carry = weighted

    def _boundary(self, tick):
        """First sample of tick ``tick`` (int or int64 array): the sample at ``tick`` x 10 ms, rounded down."""
        return (np.asarray(tick, dtype=np.int64) * self.sample_rate) // TICKS_PER_S

    def _tick_energies(self) -> np.ndarray:
        """Weighted sum of squares per finished tick, ``[ticks]``."""
        return np.concatenate(self._ticks) if self._ticks else np.zeros(0)

    def _windows(self, ticks: np.ndarray, length: int, step: int) -> np.ndarray:
        """Mean square (per sample) of every window of ``length`` ticks, one every ``step`` ticks,
        ``[n]``: the window's sum of squares over its exact number of samples."""
        if ticks.shape[0] < length:
            return np.zeros(0)
        sums = np.concatenate([[0.0], np.cumsum(ticks)])
        starts = np.arange(0, ticks.shape[0] - length + 1, step)
        samples = self._boundary(starts + length) - self._boundary(starts)
        return (sums[starts + length] - sums[starts]) / samples

    def integrated_lufs(self):
        """ITU-R BS.1770-4 gated integrated loudness, LUFS (K-weighted; 400 ms blocks every 100 ms;
        -70 LUFS absolute and -10 LU relative gates); None under 0.4 s or when every block is under -70 LUFS."""
        blocks = self._windows(self._tick_energies(), BLOCK_TICKS, BLOCK_STEP_TICKS)
        loud = blocks[_lufs(blocks) >= ABSOLUTE_GATE_LUFS] if blocks.size else blocks
        if loud.size == 0:
            return None
        relative = _lufs(loud.mean()) + RELATIVE_GATE_LU
        gated = loud[_lufs(loud) > relative]
        return float(_lufs(gated.mean())) if gated.size else None

    def short_term_lufs(self, step_ticks: int = 10) -> np.ndarray:
        """Short-term loudness, LUFS (BS.1770 K-weighted, 3 s windows), every ``step_ticks`` x 10 ms,
        ``[n]`` float, -inf for digital silence. Value ``i`` is of the window that starts at sample
        ``i * step_ticks * rate // 100``, i.e. at ``i x step_ticks x 10 ms`` (exact within one sample)."""
        return _lufs(self._windows(self._tick_energies(), SHORT_TERM_TICKS, step_ticks))

    def loudness_range_lu(self):
        """EBU Tech 3342 loudness range (LU): P95 - P10 of the gated short-term loudness; None when nothing passes the gates."""
        ticks = np.concatenate([self._tick_energies(), np.zeros(LRA_TAIL_TICKS)])
        short = _lufs(self._windows(ticks, SHORT_TERM_TICKS, SHORT_TERM_STEP_TICKS))
        short = short[short >= ABSOLUTE_GATE_LUFS]
        if short.size == 0:
            return None
        # Tech 3342 gates relative to the power mean of the short-term values (no -0.691 offset twice).
        relative = 10.0 * np.log10(np.mean(np.power(10.0, short / 10.0))) + LRA_RELATIVE_GATE_LU
        short = short[short >= relative]
        if short.size == 0:
            return None
        return float(np.percentile(short, 95) - np.percentile(short, 10))

    def sample_peak_dbfs(self):
        """Largest absolute sample, dBFS (20 log10, re 1.0 = full scale); None for digital silence."""
        return float(20.0 * np.log10(self.peak)) if self.peak > 0 else None

    @property
    def mean_square(self) -> float:
        """Mean square per sample and channel (unweighted, unfiltered): independent of the
        rate and of mono vs dual-mono, so two sources' ratio compares their power."""
        return self.sum_squares / (self.samples * self.channels) if self.samples else 0.0

    def rms_dbfs(self):
        """RMS over all samples and channels in dBFS (10 log10 of ``mean_square``, re 1.0 = full
        scale; a full-scale sine reads -3.01 dB); None for silence."""
        if self.samples == 0 or self.sum_squares <= 0:
            return None
        return float(10.0 * np.log10(self.mean_square))
