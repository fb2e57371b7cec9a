"""Vocal pitch (``--vocal_pitch``) against stembeam's before issue 31 (librosa.pyin), on the same
7 separated vocal stems, in one run (not a test).

The three cc0-multitrack songs are separated once by `stembeam pipeline` (the official 2-stems
model), and their stems used as 7 tracks (the 3 songs, copied: 3 + 3 + 1). Two measures:
  1. pitch alone: each vocal stem read and framed as the analysis frames it (mono 22.05 kHz,
     10 s pieces), then each piece's f0 by librosa.pyin (tests.librosa_reference.pyin_frames,
     the code at 8d8e047) and by this checkout's pYIN, alternating piece by piece; thread-seconds
     of each and their ratio, and how the two agree on these stems (f0 within 50 cents where both
     call a frame voiced; same voicing);
  2. the job: `stembeam features --vocal_pitch` over the 7 track folders (mixture, vocals,
     accompaniment), whole processes, with the code of ``--baseline`` (default 8d8e047; a first,
     untimed run warms its numba cache) and with this checkout, alternating for ``--rounds``;
     median walls and their ratio (target: at least 4x), and the same without --vocal_pitch.
Usage:
  .venv/bin/python -m tests.benchmarks.vocal_pitch [--rounds 3] [--baseline 8d8e047] [--no-job]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from tests.benchmarks.feature_groups import REPO, checkout, pipeline_tracks
from tests.benchmarks.feature_groups import _separate as separate
from tests.benchmarks.first_run import features_run

STEMS = 7


def vocal_pieces(path: str) -> list:
    """The Framer pieces (mono 22.05 kHz) the analysis hands to pitch_frames for the file ``path``."""
    import stembeam.model.features.analysis as analysis

    pieces, saved = [], analysis.pitch_frames

    def collect(y):
        pieces.append(np.array(y))
        return np.zeros(1 + (y.shape[0] - 2048) // 512, np.float32)

    analysis.pitch_frames = collect
    try:
        analysis.analyse_source(path, analysis.SourceInput(path), pitch=True)
    finally:
        analysis.pitch_frames = saved
    return pieces


def agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple:
    """``(share of both-voiced frames within 50 cents, share of frames with the same voicing, both-voiced frames)``."""
    both = np.isfinite(ours) & np.isfinite(theirs)
    cents = 1200 * np.abs(np.log2(ours[both] / theirs[both]))
    return float(np.mean(cents <= 50)), float(np.mean(np.isfinite(ours) == np.isfinite(theirs))), int(both.sum())


def pitch_alone(tracks: list) -> list:
    """Lines of measure 1."""
    from stembeam.model.features.vocals import pitch_frames
    from tests.librosa_reference import pyin_frames

    seconds = {"librosa.pyin (before)": 0.0, "stembeam pYIN (now)": 0.0}
    f0 = {}
    pitch_frames(np.zeros(4096, np.float32))  # its transition tables, built once per process
    pyin_frames(np.zeros(4096, np.float32))  # librosa's Viterbi compiled or loaded
    for track in tracks:
        for piece in vocal_pieces(track["sources"]["vocals"]):
            for name, method in (("librosa.pyin (before)", pyin_frames), ("stembeam pYIN (now)", pitch_frames)):
                start = time.thread_time()
                found = method(piece)
                seconds[name] += time.thread_time() - start
                f0.setdefault(track["id"], {}).setdefault(name, []).append(found)
    audio = sum(sum(len(p) for p in pieces["stembeam pYIN (now)"]) for pieces in f0.values()) * 512 / 22050
    before, now = seconds.values()
    lines = [f"1. pitch alone, {len(tracks)} separated vocal stems ({audio / 60:.1f} min), one thread: librosa.pyin {before:.1f} s, "
             f"stembeam {now:.1f} s: {before / now:.1f}x faster",
             "   agreement with librosa.pyin: f0 within 50 cents where both voiced / same voicing / frames both voiced"]
    for track_id, found in f0.items():
        ours, theirs = (np.concatenate(found[name]) for name in ("stembeam pYIN (now)", "librosa.pyin (before)"))
        pitch, voicing, count = agreement(ours, theirs)
        lines.append(f"   {track_id:<16} {100 * pitch:6.2f} %  {100 * voicing:6.2f} %  {count}")
    return lines


def track_folders(tracks: list, folder: str) -> str:
    """``folder/songs/<track>/{mixture,vocals,accompaniment}.<ext>`` links: `stembeam features --input`."""
    root = os.path.join(folder, "songs")
    for track in tracks:
        os.makedirs(os.path.join(root, track["id"]))
        for name, path in track["sources"].items():
            os.symlink(path, os.path.join(root, track["id"], name + os.path.splitext(path)[1]))
    return root


def job(tracks: list, baseline: str, rounds: int, folder: str) -> list:
    """Lines of measure 2."""
    songs = track_folders(tracks, folder)
    codes = {f"at {baseline}": checkout(baseline, os.path.join(folder, "baseline")), "this checkout": REPO}
    cache = tempfile.mkdtemp(prefix="numba-cache-", dir=folder)
    for code in codes.values():  # untimed: numba's cache filled (the old code), files in the OS cache
        features_run(code, songs, tempfile.mkdtemp(dir=folder), cache, True)
    walls = {(name, pitch): [] for name in codes for pitch in (True, False)}
    cpus = {key: [] for key in walls}
    for _ in range(rounds):
        for pitch in (True, False):
            for name, code in codes.items():
                walls[name, pitch].append(features_run(code, songs, tempfile.mkdtemp(dir=folder), cache, pitch))
                cpus[name, pitch].append(features_run.cpu)
    lines = [f"2. `stembeam features` over the {len(tracks)} tracks, whole processes, median of {rounds} round(s) (CPU: user + system of the process):"]
    for pitch in (True, False):
        flag = "--vocal_pitch" if pitch else "(no pitch)  "
        (before_name, before), (now_name, now) = ((name, walls[name, pitch]) for name in codes)
        cpu_before, cpu_now = (statistics.median(cpus[name, pitch]) for name in codes)
        lines.append(f"   {flag} {before_name}: {statistics.median(before):5.1f} s ({', '.join(f'{w:.1f}' for w in before)}); "
                     f"{now_name}: {statistics.median(now):5.1f} s ({', '.join(f'{w:.1f}' for w in now)}): "
                     f"{statistics.median(before) / statistics.median(now):.1f}x faster; CPU {cpu_before:.1f} s vs {cpu_now:.1f} s: {cpu_before / cpu_now:.1f}x")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", default="8d8e047", help="the git revision of the code before (issue 31's base)")
    parser.add_argument("--no-job", dest="job", action="store_false", help="measure the pitch alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        separated = pipeline_tracks(separate(tmp), 3)[:STEMS]
        for line in pitch_alone(separated):
            print(line, flush=True)
        if args.job:
            for line in job(separated, args.baseline, args.rounds, tmp):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
