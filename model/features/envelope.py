"""A source's level over time in a fixed number of points (the sources table's ``envelope_db``):
enough to draw an overview of each stem without decoding it again (``stembeam report``)."""
from __future__ import annotations

import numpy as np

ENVELOPE_POINTS = 200  # per source whatever its length: 200 bytes a row in the table
FLOOR_DB = -120.0  # the frame levels' own floor (spectral.RMS_FLOOR_DB; not imported: that module loads librosa)


def envelope_db(frame_db: np.ndarray, points: int = ENVELOPE_POINTS) -> list:
    """The level of ``points`` equal spans of a source: each span's power mean, rounded to whole dB,
    floored at FLOOR_DB. Point ``k`` covers ``[k, k + 1] x duration_s / len`` of the source.

    Args:
        frame_db: ``[frames]`` frame levels, dBFS (spectral.rms_db).
        points: spans wanted (fewer when there are fewer frames).
    Returns:
        ``[min(points, frames)]`` ints (int8 in the table).
    """
    levels = np.asarray(frame_db, dtype=np.float64)
    if levels.shape[0] == 0:
        return []
    count = min(points, levels.shape[0])
    edges = (np.arange(count + 1) * levels.shape[0]) // count  # every span holds at least one frame
    power = np.add.reduceat(np.power(10.0, levels / 10.0), edges[:-1]) / np.diff(edges)
    return np.maximum(np.round(10.0 * np.log10(power)), FLOOR_DB).astype(int).tolist()
