"""The features compile nothing: neither numba nor librosa is imported by `stembeam features`
(librosa's numba functions cost ~20 s of compilation on a fresh install or worker, and a cache
two processes wrote at once crashed every later process: numba/numba#10128). And processes and
threads that first use the features at once, on a fresh install, all compute the same rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests.conftest import REPO

RATE = 44100
PERIOD_S = 0.6  # a click every 0.6 s: 100 BPM
TIMEOUT_S = 600

# `stembeam features` in this process (DirectRunner workers are its threads), then the JIT and
# audio-analysis modules it loaded.
FEATURES_JOB = r"""
import json, sys
from stembeam.pipeline.features import run
code = run(sys.argv[1:])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("numba", "llvmlite", "librosa"))))
sys.exit(code)
"""

# Two threads that first use the features at once, with pitch. Prints both threads' rows.
FIRST_USE = r"""
import json, sys, threading
barrier, results = threading.Barrier(2), {}

def use(name):
    barrier.wait()
    from stembeam.model.features.analysis import SourceInput, analyse_track
    source = SourceInput(sys.argv[1])
    features = analyse_track("clicks", {"drums": source, "vocals": source, "mixture": source}, vocal_pitch=True)
    results[name] = {"sources": features.sources, "track": features.track}

threads = [threading.Thread(target=use, args=(name,)) for name in ("first", "second")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(results, sort_keys=True))
"""


def _start(script: str, cache, *args: str) -> subprocess.Popen:
    environ = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONFAULTHANDLER="1")
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple:
    out, err = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> str:
    """6 s of stereo 44.1 kHz 330 Hz bursts every PERIOD_S (wav)."""
    t = np.arange(6 * RATE) / RATE
    y = 0.5 * np.sin(2 * np.pi * 330 * t) * (np.mod(t, PERIOD_S) < 0.05)
    path = str(tmp_path_factory.mktemp("audio") / "clicks.wav")
    soundfile.write(path, np.stack([y, 0.8 * y], axis=1), RATE, subtype="PCM_16")
    return path


def test_features_job_loads_neither_numba_nor_librosa(tmp_path, clicks):
    """`stembeam features --vocal_pitch --feature_frames --feature_plots` with numba's cache in an
    empty folder: the job succeeds, never imports numba, llvmlite or librosa, and the folder stays empty."""
    song = tmp_path / "songs" / "a"
    song.mkdir(parents=True)
    for name in ("mixture", "drums", "vocals"):
        os.symlink(clicks, song / f"{name}.wav")
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    output = tmp_path / "out"
    code, out, err = _finish(_start(FEATURES_JOB, cache, "--input", str(tmp_path / "songs"), "--output", str(output), "--vocal_pitch", "--feature_frames",
                                    "--feature_plots"))
    assert code == 0, err[-3000:]
    assert json.loads(out.splitlines()[-1]) == []
    assert os.listdir(cache) == []
    assert sorted(os.listdir(output / "features")) == ["_done", "frames-00000-of-00001.parquet", "plots", "sources-00000-of-00001.parquet", "tracks-00000-of-00001.parquet"]


def _check_rows(outputs: list) -> None:
    """Every thread of every process computed the same rows, and they describe the clicks."""
    results = [result for out in outputs for result in json.loads(out.splitlines()[-1]).values()]
    assert len(results) == 2 * len(outputs)
    assert all(result == results[0] for result in results)
    track, sources = results[0]["track"], results[0]["sources"]
    assert track["status"] == "ok" and track["tempo_source"] == "drums"
    assert track["tempo_bpm"] == pytest.approx(60 / PERIOD_S, rel=0.01)
    assert len(track["beat_times_s"]) >= 8
    assert track["vocal_f0_median_hz"] == pytest.approx(330, rel=0.01)
    assert all(row["status"] == "ok" and 1.3 < row["onset_rate_hz"] < 1.8 for row in sources)


def test_first_use_at_once(tmp_path, clicks):
    """4 processes, each with 2 threads, first use the features (with pitch) at once: all compute the same rows."""
    started = [_start(FIRST_USE, tmp_path / "cache", clicks) for _ in range(4)]
    finished = [_finish(process) for process in started]
    assert all(code == 0 for code, _, _ in finished), [err[-2000:] for code, _, err in finished if code]
    _check_rows([out for _, out, _ in finished])
