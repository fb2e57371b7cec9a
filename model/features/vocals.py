"""Vocal activity from a vocals stem's frame levels, and vocal pitch (pYIN) statistics."""
from __future__ import annotations

import functools

import numpy as np
import scipy.ndimage

from stembeam.model.features.framing import ANALYSIS_RATE, FRAME_S, HOP, N_FFT
from stembeam.model.features.pitch import FMAX_HZ, FMIN_HZ, PYin

FLOOR_DB = -50.0  # a frame is never vocal below this level (dBFS)
RELATIVE_DB = -30.0  # ... nor more than this below the stem's loud frames (95th percentile), which leaves separation bleed out
SMOOTH_S = 0.25  # median filter on the level before thresholding
MIN_GAP_S = 0.5  # shorter pauses are bridged (breaths between phrases)
MIN_SEGMENT_S = 0.25  # shorter blips are dropped
PITCH_FMIN_HZ, PITCH_FMAX_HZ = FMIN_HZ, FMAX_HZ  # C2..C6: the singing range


def _runs(mask: np.ndarray) -> list:
    """``[(first, last + 1), ...]`` of the True runs of ``mask [n]``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def vocal_activity(frame_db: np.ndarray, duration_s: float) -> tuple:
    """Where a vocals stem sings.

    Args:
        frame_db: ``[frames]`` frame RMS in dBFS at FRAME_S (spectral.rms_db).
        duration_s: the stem's length.
    Returns:
        ``(active [frames] bool, [{"start_s", "end_s"}, ...])``.
    """
    if frame_db.shape[0] == 0:
        return np.zeros(0, bool), []
    smooth = scipy.ndimage.median_filter(frame_db, size=max(1, int(round(SMOOTH_S / FRAME_S))) | 1, mode="nearest")
    threshold = max(FLOOR_DB, float(np.percentile(smooth, 95)) + RELATIVE_DB)
    active = smooth > threshold
    for start, stop in _runs(~active):
        if 0 < start and stop < active.shape[0] and (stop - start) * FRAME_S < MIN_GAP_S:
            active[start:stop] = True
    for start, stop in _runs(active):
        if (stop - start) * FRAME_S < MIN_SEGMENT_S:
            active[start:stop] = False
    segments = [
        {"start_s": round(float(start * FRAME_S), 3), "end_s": round(float(min(duration_s, stop * FRAME_S)), 3)} for start, stop in _runs(active)
    ]
    return active, segments


def pitch_frames(y: np.ndarray) -> np.ndarray:
    """pYIN f0 of a Framer piece, as librosa.pyin(y, fmin=65, fmax=1050, sr=22050,
    frame_length=2048, hop_length=512, center=False).

    Args:
        y: ``[k]`` float32 mono samples at ANALYSIS_RATE.
    Returns:
        ``[frames]`` float32, Hz, NaN where unvoiced.
    """
    return _pyin().f0(y)


@functools.lru_cache(maxsize=None)
def _pyin() -> PYin:
    return PYin(ANALYSIS_RATE, N_FFT, HOP)  # its transition tables (7 MB) are built once, when pitch is first asked for


def pitch_summary(f0: np.ndarray) -> dict:
    """Median, 5th and 95th percentile of the voiced f0 and the share of frames voiced.

    Args:
        f0: ``[frames]`` Hz, NaN where unvoiced.
    Returns:
        ``{vocal_f0_median_hz, vocal_f0_p05_hz, vocal_f0_p95_hz, vocal_voiced_ratio}`` (None
        where there is nothing voiced).
    """
    voiced = f0[np.isfinite(f0)]
    if voiced.size == 0:
        return {"vocal_f0_median_hz": None, "vocal_f0_p05_hz": None, "vocal_f0_p95_hz": None, "vocal_voiced_ratio": 0.0 if f0.size else None}
    return {
        "vocal_f0_median_hz": float(np.median(voiced)),
        "vocal_f0_p05_hz": float(np.percentile(voiced, 5)),
        "vocal_f0_p95_hz": float(np.percentile(voiced, 95)),
        "vocal_voiced_ratio": float(voiced.size / f0.size),
    }
