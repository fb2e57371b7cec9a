"""Onset envelope (streamed), onsets, tempo and beats (librosa), tempo refined from the beats."""
from __future__ import annotations

import librosa
import numpy as np

from stembeam.model.features.framing import ANALYSIS_RATE, FRAME_S, HOP, N_FFT

TEMPOGRAM_FRAMES = 384  # librosa.feature.tempo's ac_size of 8 s at 22050 / 512
TEMPOGRAM_PIECE = 4096  # tempogram columns computed at a time: the full [384, n] array would grow with the track


class OnsetEnvelope:
    """librosa's spectral-flux onset strength (mel dB, lag 1, mean over bands) fed block by block.

    ``push(mel_db [128, n])`` with consecutive frames; ``finish()`` returns ``[frames]`` aligned
    as ``librosa.onset.onset_strength(center=True)`` aligns it (shifted by N_FFT / (2 HOP) frames).
    """

    def __init__(self):
        self._previous = None
        self._pieces = []

    def push(self, mel_db: np.ndarray) -> None:
        if mel_db.shape[1] == 0:
            return
        frames = mel_db if self._previous is None else np.concatenate([self._previous, mel_db], axis=1)
        env = librosa.onset.onset_strength(S=frames, sr=ANALYSIS_RATE, center=False)
        self._pieces.append((env if self._previous is None else env[1:]).astype(np.float32))
        self._previous = mel_db[:, -1:]

    def finish(self) -> np.ndarray:
        env = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        shift = N_FFT // (2 * HOP)
        return np.concatenate([np.zeros(shift, np.float32), env])[: env.shape[0]]


def onset_rate_hz(env: np.ndarray) -> float | None:
    """Detected onsets (librosa.onset.onset_detect on ``env [n]``) per second; None for an empty or flat envelope."""
    if env.shape[0] == 0:
        return None
    if not np.any(env > 0):
        return 0.0
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP)
    return float(len(onsets) / (env.shape[0] * FRAME_S))


def mean_tempogram(env: np.ndarray) -> np.ndarray:
    """``[384, 1]``: librosa.feature.tempogram(env).mean over time, computed TEMPOGRAM_PIECE columns at a time."""
    half = TEMPOGRAM_FRAMES // 2
    padded = np.pad(env, half, mode="linear_ramp", end_values=0)
    total, columns = np.zeros(TEMPOGRAM_FRAMES), 0
    for start in range(0, env.shape[0], TEMPOGRAM_PIECE):
        piece = padded[start : min(env.shape[0], start + TEMPOGRAM_PIECE) + TEMPOGRAM_FRAMES - 1]
        gram = librosa.feature.tempogram(onset_envelope=piece, sr=ANALYSIS_RATE, hop_length=HOP, win_length=TEMPOGRAM_FRAMES, center=False)
        total += gram.sum(axis=1)
        columns += gram.shape[1]
    return (total / max(1, columns))[:, None]


def refine_tempo(beats: np.ndarray) -> float | None:
    """BPM from beat times ``[b]`` (s): the slope of a line through them, each beat numbered by
    how many median intervals it lies after the first (a skipped beat keeps its number), so the
    result is not quantised by the frame hop as the autocorrelation tempo is."""
    if beats.shape[0] < 3:
        return None
    intervals = np.diff(beats)
    typical = float(np.median(intervals))
    if typical <= 0:
        return None
    numbers = np.concatenate([[0], np.cumsum(np.maximum(1, np.round(intervals / typical)))])
    slope = np.polyfit(numbers, beats, 1)[0]
    return float(60.0 / slope) if slope > 0 else None


def tempo_and_beats(env: np.ndarray) -> tuple:
    """``(tempo_bpm or None, beat_times_s [b])`` from an onset envelope ``[n]`` at FRAME_S."""
    if env.shape[0] < TEMPOGRAM_FRAMES // 4 or not np.any(env > 0):
        return None, np.zeros(0)
    coarse = float(librosa.feature.tempo(tg=mean_tempogram(env), sr=ANALYSIS_RATE, hop_length=HOP)[0])
    _, beats = librosa.beat.beat_track(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP, bpm=coarse, units="time")
    refined = refine_tempo(beats)
    return (refined if refined is not None else coarse), beats
