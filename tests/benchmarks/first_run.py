"""The first `stembeam features` run of a fresh install against a later one (not a test).

A fresh install or worker has no numba cache: with librosa's numba functions (stembeam before
issue 31) its first features run compiled them, ~20 s. Here numba's cache is a new, empty folder
(NUMBA_CACHE_DIR, which numba then uses for every cache file), and `stembeam features` runs twice
as whole processes, one after the other, on the same input: the true stems of ../shared's three
cc0-multitrack songs (mixture, vocals, drums, bass, other), ``--copies`` times each; each run
writes its own output. Printed: both walls, first minus second (target: at most 5 s), and the
number of files the runs left in the cache folder. ``--baseline REV`` does the same with the code
of a git revision (e.g. 8d8e047) in the same run; ``--rounds N`` repeats both pairs (median).
Usage:
  .venv/bin/python -m tests.benchmarks.first_run [--copies 1] [--rounds 1] [--vocal-pitch] [--baseline 8d8e047]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from tests.benchmarks.feature_groups import REPO, checkout
from tests.conftest import CC0, CC0_SONGS, MODELS

SOURCES = ("mixture", "vocals", "drums", "bass", "other")


def song_folders(folder: str, copies: int) -> str:
    """A folder of track folders (``stembeam features --input``) linking the cc0 songs' stems."""
    root = os.path.join(folder, "songs")
    for copy in range(copies):
        for song in CC0_SONGS:
            track = os.path.join(root, f"{song.split('.')[1].lower()}{copy}")
            os.makedirs(track)
            for name in SOURCES:
                os.symlink(os.path.join(CC0, song, f"{name}.flac"), os.path.join(track, f"{name}.flac"))
    return root


def features_run(code: str, songs: str, output: str, cache: str, pitch: bool) -> float:
    """Wall seconds of `stembeam features` with ``code``'s stembeam, numba's cache in ``cache``
    (the process's CPU seconds, user + system, in ``features_run.cpu``)."""
    env = dict(os.environ, PYTHONPATH=code, NUMBA_CACHE_DIR=cache, STEMBEAM_MODEL_PATH=os.environ.get("STEMBEAM_MODEL_PATH", MODELS),
               STEMBEAM_NO_DOWNLOAD="1", TF_CPP_MIN_LOG_LEVEL="2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "stembeam", "features", "--input", songs, "--output", output, *(["--vocal_pitch"] if pitch else [])],
                          cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    features_run.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise SystemExit(f"stembeam features ({code}) failed:\n{done.stderr[-3000:]}")
    return wall


def first_and_second(code: str, songs: str, folder: str, pitch: bool) -> tuple:
    """``(first wall, second wall, cache files)`` from an empty numba cache."""
    cache = tempfile.mkdtemp(prefix="numba-cache-", dir=folder)
    first = features_run(code, songs, tempfile.mkdtemp(dir=folder), cache, pitch)
    second = features_run(code, songs, tempfile.mkdtemp(dir=folder), cache, pitch)
    files = sum(len(names) for _, _, names in os.walk(cache))
    return first, second, files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1, help="copies of the three songs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--vocal-pitch", action="store_true", help="run with --vocal_pitch")
    parser.add_argument("--baseline", help="a git revision measured too (e.g. 8d8e047, issue 31's base)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        songs = song_folders(tmp, args.copies)
        codes = {"this checkout": REPO}
        if args.baseline:
            codes = {f"at {args.baseline}": checkout(args.baseline, os.path.join(tmp, "baseline")), **codes}
        found = {name: [] for name in codes}
        for _ in range(args.rounds):
            for name, code in codes.items():
                found[name].append(first_and_second(code, songs, tmp, args.vocal_pitch))
    pitch = " --vocal_pitch" if args.vocal_pitch else ""
    print(f"stembeam features{pitch} on {3 * args.copies} tracks x {len(SOURCES)} sources, twice from an empty NUMBA_CACHE_DIR; {os.cpu_count()} cores")
    for name, runs in found.items():
        gaps = [first - second for first, second, _ in runs]
        print(f"  {name:<16} first run minus second: {statistics.median(gaps):5.1f} s (median of {len(runs)}; "
              + "; ".join(f"{first:.1f} - {second:.1f} s" for first, second, _ in runs)
              + f"), files in the cache folder afterwards: {runs[-1][2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
