"""librosa 0.11, the reference the features' numpy code is checked against (tests only: stembeam
does not import it). Import it from here: ``from tests.librosa_reference import librosa``.

Importing librosa compiles its numba gufuncs into a cache shared by every process, and two
processes compiling them at once can leave a kernel of one beside a wrapper of the other, which
segfaults every later load (numba/numba#10128, not fixed in the pinned numba 0.68.1). Test
processes (pytest-xdist workers) import it one at a time, under an exclusive lock.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import tempfile

try:
    import fcntl
except ImportError:  # not POSIX: one process at a time is not enforced
    fcntl = None

# The librosa modules that compile gufuncs when imported (librosa imports the rest lazily).
COMPILED_AT_IMPORT = ("librosa.util.utils", "librosa.core.audio", "librosa.core.pitch", "librosa.beat", "librosa.sequence", "librosa.onset")


@contextlib.contextmanager
def _one_process_at_a_time():
    with open(os.path.join(tempfile.gettempdir(), "stembeam-tests-librosa.lock"), "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


with _one_process_at_a_time():
    for _module in COMPILED_AT_IMPORT:
        importlib.import_module(_module)
    import librosa  # noqa: E402
    import librosa.feature  # noqa: E402,F401

__all__ = ["librosa"]


def pyin_frames(y):
    """The vocal pitch of stembeam before issue 31 (model/features/vocals.pitch_frames at 8d8e047):
    librosa.pyin of a Framer piece, f0 in Hz (NaN where unvoiced), ``[frames]`` float32."""
    import numpy as np

    from stembeam.model.features.framing import ANALYSIS_RATE, HOP, N_FFT
    from stembeam.model.features.vocals import PITCH_FMAX_HZ, PITCH_FMIN_HZ

    f0, _, _ = librosa.pyin(y, fmin=PITCH_FMIN_HZ, fmax=PITCH_FMAX_HZ, sr=ANALYSIS_RATE, frame_length=N_FFT, hop_length=HOP, center=False)
    return f0.astype(np.float32)
