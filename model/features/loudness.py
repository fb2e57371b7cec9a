"""Streaming ITU-R BS.1770-4 loudness (EBU R128): integrated loudness, loudness range, short-term series.

The K-weighting filter is pyloudnorm's (its two biquads, for any sample rate); it runs with its
state carried from block to block, so a source is measured block by block and equals
pyloudnorm's whole-array ``integrated_loudness`` and ``loudness_range``. What is kept per track:
the channel-weighted mean square of every 10 ms of filtered signal (8 bytes per 10 ms).
"""
from __future__ import annotations

import numpy as np
import pyloudnorm
import scipy.signal

CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # BS.1770 weights for L, R, C, Ls, Rs
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
LRA_RELATIVE_GATE_LU = -20.0
TICK_S = 0.01  # energies are kept per 10 ms: gating blocks (400 ms / 100 ms) and short-term windows (3 s / 90 ms) are whole ticks
BLOCK_TICKS, BLOCK_STEP_TICKS = 40, 10
# pyloudnorm's loudness_range: 3 s windows every 90 ms (overlap 0.97), 1.5 s of silence appended.
SHORT_TERM_TICKS, SHORT_TERM_STEP_TICKS, LRA_TAIL_TICKS = 300, 9, 150


def _lufs(mean_square):
    with np.errstate(divide="ignore"):
        return -0.691 + 10.0 * np.log10(mean_square)


class LoudnessMeter:
    """Feed ``[k, channels]`` blocks with ``write``; read the measures after ``finish``.

    Also keeps the sample peak and the plain mean square (for ``rms_dbfs`` and ``share_db``).
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
        self.sample_rate = sample_rate
        self.channels = channels
        self._tick = int(round(TICK_S * sample_rate))
        self._carry = np.zeros(0, np.float32)  # weighted squares of the unfinished tick
        self._ticks = []  # weighted mean square per finished tick, in pieces
        self.samples = 0
        self.peak = 0.0
        self.sum_squares = 0.0  # unweighted, all channels, unfiltered

    def write(self, block: np.ndarray) -> None:
        """``block [k, channels]`` float samples (filtered in float32: 1e-6 relative is far below 0.01 LU)."""
        block = np.asarray(block, dtype=np.float32)
        if block.shape[0] == 0:
            return
        self.samples += block.shape[0]
        self.peak = max(self.peak, float(block.max()), -float(block.min()))
        flat = block.ravel()
        self.sum_squares += float(np.dot(flat, flat))
        filtered, self._state = scipy.signal.sosfilt(self._sos, block, axis=0, zi=self._state)
        weighted = np.square(filtered) @ self._gains
        weighted = np.concatenate([self._carry, weighted])
        whole = weighted.shape[0] // self._tick
        if whole:
            self._ticks.append(weighted[: whole * self._tick].reshape(whole, self._tick).sum(axis=1).astype(np.float64) / self._tick)
        self._carry = weighted[whole * self._tick :]

    def _tick_energies(self) -> np.ndarray:
        return np.concatenate(self._ticks) if self._ticks else np.zeros(0)

    def _windows(self, ticks: np.ndarray, length: int, step: int) -> np.ndarray:
        """Mean square of every window of ``length`` ticks, one every ``step`` ticks, ``[n]``."""
        if ticks.shape[0] < length:
            return np.zeros(0)
        sums = np.concatenate([[0.0], np.cumsum(ticks)])
        starts = np.arange(0, ticks.shape[0] - length + 1, step)
        return (sums[starts + length] - sums[starts]) / length

    def integrated_lufs(self):
        """Gated integrated loudness (LUFS), None under 0.4 s or when every block is under -70 LUFS."""
        blocks = self._windows(self._tick_energies(), BLOCK_TICKS, BLOCK_STEP_TICKS)
        loud = blocks[_lufs(blocks) >= ABSOLUTE_GATE_LUFS] if blocks.size else blocks
        if loud.size == 0:
            return None
        relative = _lufs(loud.mean()) + RELATIVE_GATE_LU
        gated = loud[_lufs(loud) > relative]
        return float(_lufs(gated.mean())) if gated.size else None

    def short_term_lufs(self, step_ticks: int = 10) -> np.ndarray:
        """Short-term loudness (3 s windows) every ``step_ticks`` x 10 ms, ``[n]`` float, -inf for digital silence."""
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
        return float(20.0 * np.log10(self.peak)) if self.peak > 0 else None

    def rms_dbfs(self):
        """RMS over all samples and channels in dBFS (a full-scale sine reads -3 dB); None for silence."""
        if self.samples == 0 or self.sum_squares <= 0:
            return None
        return float(10.0 * np.log10(self.sum_squares / (self.samples * self.channels)))
