"""Onset envelope (streamed), onsets, tempo and beats, tempo refined from the beats.

The envelope, onset detection, tempo and beat tracker are librosa 0.11's (onset.onset_strength,
onset.onset_detect, feature.tempogram / tempo, beat.beat_track), computed in numpy: its beat
tracker and peak picking are numba functions (filters.py says why librosa is not imported).
tests/test_feature_reference.py compares them with librosa's.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.fft

from stembeam.model.features.filters import hann_window
from stembeam.model.features.framing import ANALYSIS_RATE, FRAME_S, HOP, N_FFT
from stembeam.model.features.peaks import localmax, peak_pick

TEMPOGRAM_FRAMES = 384  # librosa.feature.tempo's ac_size of 8 s at 22050 / 512
TEMPOGRAM_PIECE = 4096  # tempogram columns computed at a time: the full [384, n] array would grow with the track
FRAME_RATE = ANALYSIS_RATE / HOP
START_BPM, MAX_TEMPO_BPM = 120.0, 320.0  # librosa.feature.tempo's prior: log-normal around 120 BPM (1 octave std), nothing from 320 BPM up
TIGHTNESS = 100.0  # librosa.beat.beat_track's: how strictly beats keep the tempo
# librosa.onset.onset_detect's peak picking at 22050 / 512: a peak is the maximum of the 30 ms
# before it, 0.07 above the mean of the 100 ms around it, 30 ms after the previous one.
ONSET_PEAKS = {
    "pre_max": math.ceil(0.03 * ANALYSIS_RATE // HOP), "post_max": math.ceil(0.00 * ANALYSIS_RATE // HOP + 1),
    "pre_avg": math.ceil(0.10 * ANALYSIS_RATE // HOP), "post_avg": math.ceil(0.10 * ANALYSIS_RATE // HOP + 1),
    "wait": math.ceil(0.03 * ANALYSIS_RATE // HOP), "delta": 0.07,
}
TEMPOGRAM_WINDOW = hann_window(TEMPOGRAM_FRAMES)
TEMPOGRAM_FFT = scipy.fft.next_fast_len(2 * TEMPOGRAM_FRAMES - 1, real=True)
# librosa.tempo_frequencies: BPM of each autocorrelation lag (lag 0: infinite).
TEMPO_BPMS = np.concatenate([[np.inf], 60.0 * ANALYSIS_RATE / (HOP * np.arange(1.0, TEMPOGRAM_FRAMES))])


class OnsetEnvelope:
    """librosa's spectral-flux onset strength (mel dB, lag 1, mean over bands) fed block by block.

    ``push(mel_db [128, n])`` with consecutive frames; ``finish()`` returns ``[frames]`` aligned
    as ``librosa.onset.onset_strength(center=True)`` aligns it (shifted by N_FFT / (2 HOP) frames).
    """

    def __init__(self):
        self._previous = None
        self._pieces = []

    def push(self, mel_db: np.ndarray) -> None:
        """Feed ``mel_db [N_MELS, frames]`` (spectral.mel_db) of the next consecutive frames."""
        if mel_db.shape[1] == 0:
            return
        if self._previous is None:
            self._pieces.append(np.zeros(1, np.float32))  # the first frame has no predecessor: 0
        frames = mel_db if self._previous is None else np.concatenate([self._previous, mel_db], axis=1)
        self._pieces.append(np.maximum(0.0, frames[:, 1:] - frames[:, :-1]).mean(axis=0).astype(np.float32))
        self._previous = mel_db[:, -1:]

    def finish(self) -> np.ndarray:
        """The onset strength ``[frames]`` float32, aligned as librosa's ``center=True``."""
        env = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        shift = N_FFT // (2 * HOP)
        return np.concatenate([np.zeros(shift, np.float32), env])[: env.shape[0]]


def onset_frames(env: np.ndarray) -> np.ndarray:
    """The onsets of an onset envelope (librosa.onset.onset_detect: peaks of the envelope scaled to 0..1).

    Args:
        env: ``[frames]`` onset strength at FRAME_S.
    Returns:
        ``[p]`` int frame indices.
    """
    scaled = env - np.min(env)
    scaled /= np.max(scaled) + np.finfo(scaled.dtype).tiny
    if not scaled.any() or not np.all(np.isfinite(scaled)):
        return np.zeros(0, np.int64)
    return peak_pick(scaled, **ONSET_PEAKS)


def onset_rate_hz(env: np.ndarray) -> float | None:
    """Detected onsets (onset_frames of ``env [n]``) per second; None for an empty or flat envelope."""
    if env.shape[0] == 0:
        return None
    if not np.any(env > 0):
        return 0.0
    return float(len(onset_frames(env)) / (env.shape[0] * FRAME_S))


def _autocorrelate(frames: np.ndarray) -> np.ndarray:
    """``[m, TEMPOGRAM_FRAMES]`` autocorrelation of each row of ``frames`` (librosa.autocorrelate)."""
    spectrum = scipy.fft.rfft(frames, n=TEMPOGRAM_FFT, axis=1)
    return scipy.fft.irfft(np.square(spectrum.real) + np.square(spectrum.imag), n=TEMPOGRAM_FFT, axis=1)[:, :TEMPOGRAM_FRAMES]


def mean_tempogram(env: np.ndarray) -> np.ndarray:
    """librosa.feature.tempogram(env) averaged over time (each column scaled to a maximum of 1),
    computed TEMPOGRAM_PIECE columns at a time.

    Args:
        env: ``[frames]`` onset strength at FRAME_S.
    Returns:
        ``[384]`` float (lags of FRAME_S).
    """
    half = TEMPOGRAM_FRAMES // 2
    padded = np.pad(env, half, mode="linear_ramp", end_values=0)
    total, columns = np.zeros(TEMPOGRAM_FRAMES), 0
    for start in range(0, env.shape[0], TEMPOGRAM_PIECE):
        piece = padded[start : min(env.shape[0], start + TEMPOGRAM_PIECE) + TEMPOGRAM_FRAMES - 1]
        gram = _autocorrelate(np.lib.stride_tricks.sliding_window_view(piece, TEMPOGRAM_FRAMES) * TEMPOGRAM_WINDOW)
        peak = np.max(np.abs(gram), axis=1, keepdims=True)
        peak[peak < np.finfo(np.float64).tiny] = 1.0
        total += (gram / peak).sum(axis=0)
        columns += gram.shape[0]
    return total / max(1, columns)


def tempo_from_tempogram(tempogram: np.ndarray) -> float:
    """BPM of the lag of ``tempogram [384]`` (mean_tempogram) with the most autocorrelation weighted by librosa.feature.tempo's prior."""
    with np.errstate(divide="ignore"):
        prior = -0.5 * ((np.log2(TEMPO_BPMS) - np.log2(START_BPM)) / 1.0) ** 2
    prior[: int(np.argmax(TEMPO_BPMS < MAX_TEMPO_BPM))] = -np.inf
    return float(TEMPO_BPMS[np.argmax(np.log1p(1e6 * tempogram) + prior)])


def _local_score(onsets: np.ndarray, frames_per_beat: float) -> np.ndarray:
    """The onsets convolved with a Gaussian of a beat's width, as librosa's __beat_local_score
    adds it up (float64, k ascending; the window's last tap never meets the first frame)."""
    window = np.exp(-0.5 * (np.arange(-frames_per_beat, frames_per_beat + 1) * 32.0 / frames_per_beat) ** 2)
    n, taps, half = onsets.shape[0], window.shape[0], window.shape[0] // 2
    score = np.zeros(n)
    index = np.arange(n)
    for k in range(taps):
        # localscore[i] += window[k] * onsets[i + half - k] for max(0, i + half - n + 1) <= k < min(i + half, taps)
        valid = (index >= k - half + 1) & (index <= k + n - 1 - half)
        score[valid] += window[k] * onsets[index[valid] + half - k]
    return score


def _beat_dp(score: np.ndarray, frames_per_beat: float) -> np.ndarray:
    """librosa's __beat_track_dp: ``backlink [n]``, each frame's best previous beat (-1: none) and
    ``cumscore [n]``. Frames are computed half a beat at a time: no frame of a step can be
    another's previous beat."""
    n = score.shape[0]
    nearest, farthest = int(np.round(frames_per_beat / 2)), int(2 * frames_per_beat)
    offsets = np.arange(nearest, farthest + 1)  # i - loc, the nearest previous beat first
    penalty = np.array([TIGHTNESS * (math.log(offset) - math.log(frames_per_beat)) ** 2 for offset in offsets])
    cumscore, backlink = np.zeros(n), np.full(n, -1, np.int64)
    threshold = 0.01 * score.max()
    first_beat = True
    step = max(1, nearest)
    for start in range(0, n, step):
        rows = np.arange(start, min(n, start + step))
        locations = rows[:, None] - offsets[None, :]
        candidates = np.where(locations >= 0, cumscore[np.maximum(locations, 0)] - penalty[None, :], -np.inf)
        best = np.argmax(candidates, axis=1)  # the first maximum: the nearest location, as librosa's strict '>' keeps it
        found = locations[np.arange(rows.shape[0]), best] >= 0
        cumscore[rows] = score[rows] + np.where(found, candidates[np.arange(rows.shape[0]), best], 0.0)
        links = np.where(found, locations[np.arange(rows.shape[0]), best], -1)
        for row, link in zip(rows, links):
            if first_beat and score[row] < threshold:
                continue
            first_beat = False
            backlink[row] = link
    return backlink, cumscore


def _last_beat(cumscore: np.ndarray) -> int:
    """The last local maximum of ``cumscore`` at least half the median local maximum (librosa's __last_beat)."""
    peaks = localmax(cumscore)
    threshold = 0.5 * np.median(cumscore[peaks]) if peaks.any() else 0.0
    found = np.flatnonzero(peaks & (cumscore >= threshold))
    return int(found[-1]) if found.size else cumscore.shape[0] - 1


def _trim(score: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Drop the beats before the first and after the last frame whose local score is above half
    the RMS of the smoothed beat scores (librosa's __trim_beats)."""
    smooth = np.convolve(score[beats], np.hanning(5))[2 : score.shape[0] + 2]
    threshold = 0.5 * np.sqrt(np.mean(smooth**2))
    above = np.flatnonzero(score > threshold)
    trimmed = beats.copy()
    if above.size == 0:
        trimmed[:] = False
        return trimmed
    trimmed[: above[0]] = False
    trimmed[above[-1] + 1 :] = False
    return trimmed


def beat_frames(env: np.ndarray, bpm: float) -> np.ndarray:
    """The beats of an onset envelope at a tempo (librosa.beat.beat_track's dynamic programme, trimmed).

    Args:
        env: ``[frames]`` onset strength at FRAME_S.
        bpm: the tempo.
    Returns:
        ``[b]`` int frame indices.
    """
    if not env.any():
        return np.zeros(0, np.int64)
    onsets = env / (env.std(ddof=1) + np.finfo(env.dtype).tiny)
    frames_per_beat = float(np.round(FRAME_RATE * 60.0 / bpm))
    score = _local_score(onsets, frames_per_beat)
    backlink, cumscore = _beat_dp(score, frames_per_beat)
    beats = np.zeros(env.shape[0], dtype=bool)
    frame = _last_beat(cumscore)
    while frame >= 0:
        beats[frame] = True
        frame = backlink[frame]
    return np.flatnonzero(_trim(score, beats))


def refine_tempo(beats: np.ndarray) -> float | None:
    """BPM from beat times: the slope of a line through them, each beat numbered by how many median
    intervals it lies after the first (a skipped beat keeps its number), so the result is not
    quantised by the frame hop as the autocorrelation tempo is.

    Args:
        beats: ``[b]`` beat times in seconds.
    Returns:
        BPM, or None with too few beats.
    """
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
    """Tempo and beats of a source.

    Args:
        env: ``[frames]`` onset strength at FRAME_S (OnsetEnvelope).
    Returns:
        ``(tempo_bpm or None, beat_times_s [b] float)``.
    """
    if env.shape[0] < TEMPOGRAM_FRAMES // 4 or not np.any(env > 0):
        return None, np.zeros(0)
    coarse = tempo_from_tempogram(mean_tempogram(env))
    beats = beat_frames(env, coarse) * HOP / ANALYSIS_RATE
    refined = refine_tempo(beats)
    return (refined if refined is not None else coarse), beats
