"""Soak (a script, not a test): >= 200 hostile manifest rows through one pipeline run.

Generates good audio mixed with zero-byte, truncated and bit-flipped mp3/flac/wav files,
non-audio files named like audio, missing paths, directories, mono / 5.1 / 8-channel files,
8 to 96 kHz rates, 0.1 s and silent tracks, a 60-minute track, unicode, space-laden and
``-``-prefixed names, duplicate and path-like track ids; runs the job once and checks that
every row is accounted for exactly once, nothing partial or temporary remains, no stem holds
NaN/Inf, silence stays silent, nothing is written outside --output, and the job exits 0.

  .venv/bin/python -m tests.soak [--workdir DIR] [--long-minutes 60] [-- extra Beam options]
"""
from __future__ import annotations

import argparse
import collections
import glob
import os
import random
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow.parquet as pq

from tests.conftest import CC0, CC0_SONGS, REPO, pipeline_command, write_manifest

SR = 44100


def _write(path, signal, rate=SR, codec="wav"):
    from stembeam.model.encode import write_audio

    write_audio(path, np.asarray(signal, np.float32), rate, codec)
    return path


def _tone(seconds, rate=SR, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    base = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 880) * t) + 0.05 * rng.standard_normal(t.size)
    return np.stack([base * (0.6 + 0.4 * c / max(1, channels - 1)) for c in range(channels)], axis=1)


def generate(folder: str, long_minutes: float):
    """Files and manifest rows ``(uri, track_id or '', category)``."""
    from stembeam.model.decode import load_audio

    rng = random.Random(7)
    rows = []

    def add(path, category, track_id=""):
        rows.append((path, track_id, category))

    mixes = [load_audio(os.path.join(CC0, song, "mixture.flac")) for song in CC0_SONGS]
    for i in range(72):  # good clips of 1.5-4 s from real music, as wav / flac / mp3
        mix = mixes[i % 3]
        length = int(rng.uniform(1.5, 4.0) * SR)
        start = rng.randrange(0, mix.shape[0] - length)
        codec = ("wav", "flac", "mp3")[i % 3]
        add(_write(os.path.join(folder, f"good_{i:03d}.{codec}"), mix[start : start + length], codec=codec), f"good {codec}", f"good-{i:03d}")
    good = {codec: [r[0] for r in rows if r[0].endswith(codec)] for codec in ("wav", "flac", "mp3")}
    for ext in ("wav", "mp3", "flac"):
        for k in range(3):
            path = os.path.join(folder, f"zero_{k}.{ext}")
            open(path, "wb").close()
            add(path, "zero-byte")
    for ext, sources in good.items():
        for k, source in enumerate(sources[:5]):
            data = open(source, "rb").read()
            cut = data[: max(60, int(len(data) * (0.1 + 0.2 * k)))] if k < 4 else data[:50]
            add(_bytes(os.path.join(folder, f"truncated_{k}.{ext}"), cut), f"truncated {ext}")
            flipped = bytearray(data)
            for _ in range(40 if k < 4 else 400):
                position = rng.randrange(0 if k == 4 else min(200, len(data) - 1), len(data))
                flipped[position] ^= 1 << rng.randrange(8)
            add(_bytes(os.path.join(folder, f"bitflip_{k}.{ext}"), bytes(flipped)), f"bit-flipped {ext}")
    for k, ext in enumerate(("wav", "mp3", "flac", "wav", "mp3", "flac")):
        payload = [b"just some lyrics\n" * 50, os.urandom(5000), b"\x89PNG\r\n\x1a\n" + os.urandom(2000)][k % 3]
        add(_bytes(os.path.join(folder, f"not_audio_{k}.{ext}"), payload), "non-audio")
    for k in range(6):
        add(os.path.join(folder, "missing", f"nowhere_{k}.wav"), "missing")
    for k in range(4):
        path = os.path.join(folder, f"a_directory_{k}.wav")
        os.makedirs(path, exist_ok=True)
        add(path, "directory")
    for k in range(6):
        add(_write(os.path.join(folder, f"mono_{k}.wav"), _tone(2, channels=1, seed=k)), "mono")
    for k in range(5):
        add(_write(os.path.join(folder, f"surround51_{k}.{'wav' if k % 2 else 'flac'}"), _tone(2, channels=6, seed=k), codec="wav" if k % 2 else "flac"), "5.1")
        add(_write(os.path.join(folder, f"octo_{k}.wav"), _tone(2, channels=8, seed=k)), "8-channel")
    for rate in (8000, 16000, 22050, 48000, 96000):
        for k in range(4):
            codec = ("wav", "flac")[k % 2]
            add(_write(os.path.join(folder, f"rate_{rate}_{k}.{codec}"), _tone(2, rate=rate, seed=k), rate=rate, codec=codec), f"{rate} Hz")
    for k in range(6):
        add(_write(os.path.join(folder, f"short_{k}.wav"), _tone(0.1, seed=k)), "0.1 s")
        add(_write(os.path.join(folder, f"silent_{k}.{('wav', 'flac')[k % 2]}"), np.zeros((3 * SR, 2)), codec=("wav", "flac")[k % 2]), "silent", f"silent-{k}")
    names = ["Ünïcødé — ☃ 音楽", "with  two  spaces ", "tab\tand,comma", "emoji 🎧 track", "naïve café", "-rf", "--help", "-i", "-y out", "- dash"]
    for k, name in enumerate(names):
        codec = ("wav", "mp3")[k % 2]
        add(_write(os.path.join(folder, f"{name}.{codec}"), _tone(1.5, seed=100 + k), codec=codec), "dash name" if name.startswith("-") else "unicode/space name")
    for k, track_id in enumerate(["../../escape", "/tmp/absolute-track", "..", ".hidden", "-rf", "a/../../b", "nested/dir/id", "C:\\windows\\id"]):
        add(_write(os.path.join(folder, f"pathlike_{k}.wav"), _tone(1.5, seed=200 + k)), "path-like id", track_id)
    for k in range(4):  # duplicate ids: the second row of each pair is an error row
        add(good["wav"][k], "duplicate id (first)", f"dup-{k}")
        add(good["flac"][k], "duplicate id (second)", f"dup-{k}")
    long_path = os.path.join(folder, f"long_{long_minutes:g}min.flac")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=220:duration={long_minutes * 60}:sample_rate={SR}",
         "-af", "volume=0.3", "-ac", "2", "-c:a", "flac", "file:" + long_path],
        check=True,
    )
    add(long_path, f"{long_minutes:g}-minute track", "long")
    return rows


def _bytes(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def check(rows, output: str, folder: str, before: set) -> tuple[list, dict]:
    """Problems found, and ``{category: Counter(ok/error)}``."""
    from stembeam.model.encode import TEMP_PREFIX
    from stembeam.model.decode import load_audio
    from stembeam.transforms import workspace
    from stembeam.transforms.records import default_track_id

    problems = []
    meta = pq.read_table(sorted(glob.glob(os.path.join(output, "metadata", "*.parquet")))).to_pylist()
    by_row = collections.defaultdict(list)
    for record in meta:
        by_row[record["track_id"], record["source_uri"]].append(record)
    counts = collections.defaultdict(collections.Counter)
    for uri, track_id, category in rows:
        track_id = track_id or default_track_id(uri)
        records = by_row.pop((track_id, uri), [])
        statuses = sorted(r["status"] for r in records)
        if statuses == ["ok", "ok"]:
            counts[category]["ok"] += 1
            for r in records:
                stem = r["stem_uri"]
                if not os.path.abspath(stem).startswith(os.path.abspath(output) + os.sep):
                    problems.append(f"{uri}: stem outside --output: {stem}")
                signal = load_audio(stem)
                if not np.all(np.isfinite(signal)) or not np.isfinite(r["rms"]) or not np.isfinite(r["peak"]):
                    problems.append(f"{uri}: NaN/Inf in {stem}")
                if category == "silent" and np.max(np.abs(signal)) != 0.0:
                    problems.append(f"{uri}: silence gave a non-silent {r['stem']} (peak {np.max(np.abs(signal))})")
        elif statuses == ["error"] and records[0]["error"]:
            counts[category]["error"] += 1
            counts.setdefault("_reasons", collections.Counter())[f"{category}: {records[0]['error'].split(': ', 1)[-1][:70]}"] += 1
        else:
            problems.append(f"{uri} (id {track_id!r}): rows {statuses}, expected 2 ok rows or 1 error row")
    for key, records in by_row.items():
        problems.append(f"metadata rows for no manifest row: {key} x{len(records)}")
    for root, dirs, files in os.walk(output):
        for name in files + dirs:
            if name.startswith(TEMP_PREFIX) or name == "_work":
                problems.append(f"leftover temporary: {os.path.join(root, name)}")
    leftovers = set(glob.glob(os.path.join(tempfile.gettempdir(), "stembeam-decode-*"))) - before
    leftovers |= set(glob.glob(os.path.join(workspace.local_work_dir(output), "*")))
    if leftovers:
        problems.append(f"decode temporaries left: {sorted(leftovers)[:3]}")
    after = set(os.listdir(os.path.dirname(os.path.abspath(output))))
    if after - before - {os.path.basename(output)}:
        problems.append(f"written outside --output: {sorted(after - before - {os.path.basename(output)})}")
    if os.path.exists("/tmp/absolute-track"):
        problems.append("a track id wrote to /tmp/absolute-track")
    return problems, counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="where to generate files (default: a temporary folder)")
    parser.add_argument("--long-minutes", type=float, default=60.0, help="length of the long track")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    workdir = args.workdir or tempfile.mkdtemp(prefix="stembeam-soak-")
    folder = os.path.join(workdir, "inputs")
    os.makedirs(folder, exist_ok=True)
    start = time.perf_counter()
    rows = generate(folder, args.long_minutes)
    manifest = write_manifest(os.path.join(workdir, "manifest.csv"), [(uri, track_id) for uri, track_id, _ in rows])
    print(f"generated {len(rows)} manifest rows in {time.perf_counter() - start:.0f} s under {workdir}", flush=True)
    output = os.path.join(workdir, "out")
    before = set(os.listdir(workdir)) | set(glob.glob(os.path.join(tempfile.gettempdir(), "stembeam-decode-*")))
    start = time.perf_counter()
    job = subprocess.run(pipeline_command(manifest, output, *extra), cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = [line for line in job.stderr.splitlines() if line.startswith("stembeam pipeline:")]
    print(f"job exit code {job.returncode} after {seconds:.0f} s; {summary[-1] if summary else job.stderr[-3000:]}")
    problems, counts = check(rows, output, workdir, before)
    reasons = counts.pop("_reasons", collections.Counter())
    print(f"\n{'category':28s} {'rows':>5s} {'ok':>5s} {'error':>6s}")
    for category in sorted(counts, key=lambda c: [r[2] for r in rows].index(c)):
        c = counts[category]
        print(f"{category:28s} {c['ok'] + c['error']:5d} {c['ok']:5d} {c['error']:6d}")
    total_ok = sum(c["ok"] for c in counts.values())
    total_error = sum(c["error"] for c in counts.values())
    print(f"{'total':28s} {len(rows):5d} {total_ok:5d} {total_error:6d}")
    print("\nerror reasons (category: reason, count):")
    for reason, n in sorted(reasons.items()):
        print(f"  {n:3d}  {reason}")
    if job.returncode != 0:
        problems.append(f"job exit code {job.returncode}")
    print("\nPROBLEMS:\n  " + "\n  ".join(problems) if problems else "\nall checks passed: every row accounted for exactly once, no temporaries, no NaN/Inf, silence silent, nothing outside --output, exit 0")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
