"""Cutting a stream of samples into the frames a whole-array ``librosa.stft(center=True)`` would see."""
from __future__ import annotations

import numpy as np

ANALYSIS_RATE = 22050  # librosa's default rate: spectral, rhythm, vocal and tonal features are computed on the mono mix at this rate
N_FFT = 2048
HOP = 512
FRAME_S = HOP / ANALYSIS_RATE  # 23.2 ms between frames


class Framer:
    """Cuts a stream into pieces whose ``center=False`` frames are the next frames of the whole stream.

    The stream is padded with ``N_FFT // 2`` zeros at both ends (``finish`` pushes the end), so
    frame ``i`` is centred at sample ``i * HOP``, as librosa's ``center=True`` with zero padding.
    ``frames`` counts the frames handed out.

    Args:
        frame_length: N_FFT (2048).
        hop: HOP (512).
    """

    def __init__(self, frame_length: int = N_FFT, hop: int = HOP):
        self.frame_length, self.hop = frame_length, hop
        self._tail = np.zeros(frame_length // 2, dtype=np.float32)
        self.frames = 0

    def push(self, y: np.ndarray):
        """Add ``y [k]`` float32 mono samples.

        Returns:
            ``[(m - 1) * hop + frame_length]`` float32, a piece holding the next ``m`` frames, or
            None while fewer than one frame is buffered.
        """
        buffer = np.concatenate([self._tail, np.asarray(y, dtype=np.float32)])
        if buffer.shape[0] < self.frame_length:
            self._tail = buffer
            return None
        count = 1 + (buffer.shape[0] - self.frame_length) // self.hop
        self._tail = buffer[count * self.hop :]
        self.frames += count
        return buffer[: (count - 1) * self.hop + self.frame_length]

    def finish(self):
        """Push the end padding; returns the last piece (as ``push``) or None."""
        return self.push(np.zeros(self.frame_length // 2, dtype=np.float32))
