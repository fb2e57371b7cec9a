"""librosa's numba functions on a fresh cache (NUMBA_CACHE_DIR in tmp_path, as an empty
site-packages cache): processes and threads that first use them at once, and caches that a
crashed or killed compile left behind. A gufunc's kernel and wrapper cached by two different
processes segfault every later load (numba/numba#10128), so a crash shows as exit code -11."""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests.conftest import REPO

RATE = 44100
PERIOD_S = 0.6  # a click every 0.6 s: 100 BPM
TIMEOUT_S = 900  # a cold compile takes ~25 s of one core; several at once on 2 busy cores take far longer

# Two threads that first use the features at once, as warm_up_in_background beside a DoFn: one
# warms up, both import the analysis and analyse the same track. Prints both threads' rows.
FIRST_USE = r"""
import json, sys, threading
barrier, results = threading.Barrier(2), {}

def use(name):
    barrier.wait()
    from stembeam.model.features.analysis import SourceInput, analyse_track, warm_up
    if name == "warm-up":
        warm_up()
    features = analyse_track("clicks", {"drums": SourceInput(sys.argv[1]), "mixture": SourceInput(sys.argv[1])})
    results[name] = {"sources": features.sources, "track": features.track}

threads = [threading.Thread(target=use, args=(name,)) for name in ("warm-up", "analysis")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps(results, sort_keys=True))
"""

# librosa used directly (no stembeam lock): float32 peak picking runs a cached gufunc.
PLAIN_LIBROSA = r"""
import librosa, numpy as np
x = np.abs(np.sin(np.arange(4000) / 9.0)).astype(np.float32)
print(int(librosa.util.peak_pick(x, pre_max=3, post_max=3, pre_avg=3, post_avg=5, delta=0.1, wait=5).size))
"""

# A process outside stembeam's lock whose compile order differs (3 functions compiled first, so
# its kernels get other names) recompiles the kernels of librosa.util's gufuncs beside the
# wrappers another process cached, and is killed before it runs or records anything.
KILLED_FOREIGN_COMPILE = r"""
import os, signal, numba
for k in range(3):
    numba.njit(lambda x: x + 1)(k)
import librosa.util.utils
os.kill(os.getpid(), signal.SIGKILL)
"""

# stembeam's warm-up killed (SIGKILL, holding the lock) after its DIE_AFTER-th cache file.
KILLED_WARM_UP = r"""
import os, signal
from numba.core import caching
save, saved = caching.IndexDataCacheFile._save_data, []

def save_then_die(self, name, data):
    save(self, name, data)
    saved.append(name)
    if len(saved) == int(os.environ["DIE_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)

caching.IndexDataCacheFile._save_data = save_then_die
from stembeam.model.features.analysis import warm_up
warm_up()
"""

WARM_UP_WITH_PITCH = "from stembeam.model.features.analysis import warm_up; warm_up(True)"


def _start(script: str, cache, *args: str, **env) -> subprocess.Popen:
    environ = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONFAULTHANDLER="1", **env)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> tuple:
    """``(exit code, stdout, stderr)``."""
    out, err = process.communicate(timeout=TIMEOUT_S)
    return process.returncode, out, err


def _run(script: str, cache, *args: str, **env) -> tuple:
    return _finish(_start(script, cache, *args, **env))


def _tail(err: str) -> str:
    """A child's stderr for a failure message: a crash's traceback without faulthandler's module list."""
    return err.split("\nExtension modules:")[0][-3000:]


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> str:
    """6 s of stereo 44.1 kHz 330 Hz bursts every PERIOD_S (wav)."""
    t = np.arange(6 * RATE) / RATE
    y = 0.5 * np.sin(2 * np.pi * 330 * t) * (np.mod(t, PERIOD_S) < 0.05)
    path = str(tmp_path_factory.mktemp("audio") / "clicks.wav")
    soundfile.write(path, np.stack([y, 0.8 * y], axis=1), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> str:
    """A cache one process compiled alone (warm_up with pitch): copy it, do not change it."""
    cache = tmp_path_factory.mktemp("warm") / "cache"
    code, _, err = _run(WARM_UP_WITH_PITCH, cache)
    assert code == 0, _tail(err)
    return str(cache)


def _check_rows(outputs: list) -> None:
    """Every thread of every process computed the same rows, and they describe the clicks."""
    results = [result for out in outputs for result in json.loads(out.splitlines()[-1]).values()]
    assert len(results) == 2 * len(outputs)
    assert all(result == results[0] for result in results)
    track, sources = results[0]["track"], results[0]["sources"]
    assert track["status"] == "ok" and track["tempo_source"] == "drums"
    assert track["tempo_bpm"] == pytest.approx(60 / PERIOD_S, rel=0.01)
    assert len(track["beat_times_s"]) >= 8
    assert all(row["status"] == "ok" and 1.3 < row["onset_rate_hz"] < 1.8 for row in sources)


def _crash_report(finished: list) -> str:
    codes = [code for code, _, _ in finished]
    first = next(err for code, _, err in finished if code != 0)
    return f"exit codes {codes} (-11: segfault)\n{_tail(first)}"


def _first_use_rounds(tmp_path, clicks: str, rounds: int, processes: int = 4) -> None:
    for number in range(rounds):
        cache = tmp_path / f"cache-{number}"
        started = [_start(FIRST_USE, cache, clicks) for _ in range(processes)]
        finished = [_finish(process) for process in started]
        assert all(code == 0 for code, _, _ in finished), f"round {number}: {_crash_report(finished)}"
        _check_rows([out for _, out, _ in finished])
        # The cache they left is as their locked compiles recorded it, and a later run loads it.
        code, out, err = _run(FIRST_USE, cache, clicks)
        assert code == 0 and "compiling afresh" not in err, f"round {number}, later run: exit code {code}\n{_tail(err)}"


def test_first_use_at_once_from_an_empty_cache(tmp_path, clicks):
    """4 processes, each with 2 threads, first use the features at once on an empty cache: none
    crashes, all compute the same rows (one round; the 5-round run is marked slow)."""
    _first_use_rounds(tmp_path, clicks, rounds=1)


@pytest.mark.slow
def test_first_use_at_once_from_an_empty_cache_five_rounds(tmp_path, clicks):
    """As above, 5 rounds, each on its own empty cache."""
    _first_use_rounds(tmp_path, clicks, rounds=5)


def test_poisoned_cache_is_recovered(tmp_path, clicks, warm_cache):
    """A cache whose gufunc kernels another, killed process recompiled beside the wrappers of the
    first (what two processes compiling at once leave) crashes plain librosa on every load; the
    features' first use detects it, compiles afresh, and leaves a cache that crashes nobody."""
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    kernels = glob.glob(str(cache / "util_*" / "utils.*.nb[ic]"))  # not the guf-* wrappers
    assert kernels
    for path in kernels:
        os.remove(path)
    code, _, err = _run(KILLED_FOREIGN_COMPILE, cache)
    assert code == -9, _tail(err)
    code, _, err = _run(PLAIN_LIBROSA, cache)
    assert code == -11, f"the cache should be poisoned (plain librosa segfaults): exit code {code}\n{_tail(err)}"

    code, out, err = _run(FIRST_USE, cache, clicks)
    assert code == 0, _tail(err)
    assert "compiling afresh" in err
    _check_rows([out])
    code, _, err = _run(PLAIN_LIBROSA, cache)
    assert code == 0, _tail(err)
    code, out, err = _run(FIRST_USE, cache, clicks)
    assert code == 0 and "compiling afresh" not in err, _tail(err)  # the repaired cache is trusted as is
    _check_rows([out])


@pytest.mark.slow
def test_warm_up_killed_while_compiling(tmp_path, clicks):
    """A warm-up killed while it compiles (holding the lock, part of the cache written): the next
    process gets the lock at once, drops what the dead one wrote, and computes the right rows."""
    cache = tmp_path / "cache"
    code, _, err = _run(KILLED_WARM_UP, cache, DIE_AFTER="9")
    assert code == -9, _tail(err)
    assert glob.glob(str(cache / "*" / "*.nbc"))
    code, out, err = _run(FIRST_USE, cache, clicks)
    assert code == 0, _tail(err)
    assert "compiling afresh" in err
    _check_rows([out])


def test_warmed_up_analysis_compiles_nothing(tmp_path, clicks, warm_cache):
    """After warm_up(True), analysing stereo 44.1 kHz stems with pitch and frames writes no numba
    cache file: every compile happens in the warm-up, under the lock."""
    cache = tmp_path / "cache"
    shutil.copytree(warm_cache, cache)
    script = r"""
import sys
from stembeam.model.features.analysis import SourceInput, _cache_files, analyse_track, librosa_cache_folders, warm_up
warm_up(True)
before = _cache_files(librosa_cache_folders())
source = SourceInput(sys.argv[1])
features = analyse_track("t", {"vocals": source, "drums": source, "mixture": source}, vocal_pitch=True, frames=True)
assert features.track["status"] == "ok", features.track
after = _cache_files(librosa_cache_folders())
print(sorted(set(after.items()) ^ set(before.items())))
"""
    code, out, err = _run(script, cache, clicks)
    assert code == 0, _tail(err)
    assert out.splitlines()[-1] == "[]"
    assert "compiling afresh" not in err  # the copied cache was trusted
