"""Where the MIR features' time goes (not a test): thread-seconds per feature group.

Analyses the tracks of a `stembeam pipeline` output (its stems as the corpus job wrote them, and
each track's mixture) in one thread of a fresh process, as the features stage does, twice: once
plain (the total thread time of the analysis) and once under cProfile with a thread-time clock,
whose cumulative times give each group's share: decoding, loudness (K-weighting and gating),
the mono mix and its resampling to 22.05 kHz, the STFT, spectral statistics (frame levels, mel,
centroid, flatness, zero crossings, MFCCs), onset envelope, tonality (chroma, tuning peaks),
vocal pitch, and per track: tempo and beats, onset detection, vocal activity, frame series.
Function names of both the current code and the code before issue 31 are mapped, so
``--baseline REV`` (a git revision of this repository, e.g. 8d8e047) runs the same analysis with
that revision's code and prints both columns and their ratio, measured in one run.

Without ``--stems-from``, the three cc0-multitrack songs are separated once by `stembeam
pipeline` into a temporary folder and analysed ``--copies`` times each (7: the 21-track set).
OPENBLAS_NUM_THREADS=1 in the analysing processes: every thread-second is counted in the one thread.
Usage:
  .venv/bin/python -m tests.benchmarks.feature_groups [--copies 7] [--stems-from OUTPUT] [--vocal-pitch] [--baseline 8d8e047]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# group -> functions (file name, function name) whose cumulative time is the group's; per-source
# groups first. "mix + resample" is SourceAnalyser.write less what it calls of the others.
GROUPS = (
    ("decode", (("analysis.py", "blocks"), ("audio.py", "decode_blocks"))),
    ("loudness", (("loudness.py", "write"), ("loudness.py", "integrated_lufs"), ("loudness.py", "loudness_range_lu"), ("loudness.py", "short_term_lufs"))),
    ("mix + resample", ()),
    ("STFT", (("spectrum.py", "stft"), ("spectral.py", "power_spectrum"))),
    ("spectral stats", (("spectral.py", "rms_db"), ("spectral.py", "mel_db"), ("spectral.py", "add"))),
    ("onset envelope", (("rhythm.py", "push"), ("rhythm.py", "finish"))),
    ("tonality", (("tonality.py", "add"), ("tonality.py", "summary"))),
    ("vocal pitch", (("vocals.py", "pitch_frames"), ("vocals.py", "pitch_summary"))),
    ("tempo + beats", (("rhythm.py", "tempo_and_beats"),)),
    ("onset detection", (("rhythm.py", "onset_rate_hz"),)),
    ("vocal activity", (("vocals.py", "vocal_activity"),)),
    ("frame series", (("analysis.py", "_frame_rows"),)),
)


def _child(spec: dict) -> dict:
    """In the analysing process: ``{"total": s, "profiled_total": s, "groups": {group: s}}``."""
    import cProfile
    import pstats
    import time

    from stembeam.model.features.analysis import SourceInput, analyse_track

    def analyse_all():
        for track in spec["tracks"]:
            analyse_track(track["id"], {name: SourceInput(uri) for name, uri in track["sources"].items()}, vocal_pitch=spec["pitch"], frames=spec["frames"])

    first = spec["tracks"][0]
    analyse_track("warm", {name: SourceInput(uri) for name, uri in first["sources"].items()}, vocal_pitch=spec["pitch"])  # imports, caches, numba
    start = time.thread_time()
    analyse_all()
    total = time.thread_time() - start
    profile = cProfile.Profile(time.thread_time)
    start = time.thread_time()
    profile.runcall(analyse_all)
    profiled_total = time.thread_time() - start
    stats = pstats.Stats(profile).stats  # {(file, line, name): (calls, primitive, own, cumulative, callers)}

    def cumulative(file_name, function, caller=None):
        found = 0.0
        for (path, _, name), (_, _, _, cum, callers) in stats.items():
            if os.path.basename(path) == file_name and name == function:
                if caller is None:
                    found += cum
                else:
                    found += sum(edge[3] for (cpath, _, cname), edge in callers.items() if os.path.basename(cpath) == caller[0] and cname == caller[1])
        return found

    groups = {name: sum(cumulative(*function) for function in functions) for name, functions in GROUPS}
    write = ("analysis.py", "write")
    groups["mix + resample"] = cumulative(*write) - cumulative("loudness.py", "write", write) - cumulative("analysis.py", "_frames", write)
    return {"total": total, "profiled_total": profiled_total, "groups": groups}


def pipeline_tracks(output: str, copies: int) -> list:
    """``[{"id", "sources": {name: path}}]`` of a pipeline output: ok stems from its metadata, the mixture its source."""
    import pyarrow.parquet as pq

    found = {}
    for name in sorted(os.listdir(os.path.join(output, "metadata"))):
        if name.endswith(".parquet"):
            for row in pq.read_table(os.path.join(output, "metadata", name), columns=["track_id", "source_uri", "stem", "stem_uri", "status"]).to_pylist():
                if row["status"] == "ok" and row["stem"]:
                    found.setdefault(row["track_id"], {"mixture": row["source_uri"]})[row["stem"]] = row["stem_uri"]
    return [{"id": f"{track_id}-{copy}", "sources": sources} for copy in range(copies) for track_id, sources in sorted(found.items())]


def _separate(folder: str) -> str:
    """The three cc0-multitrack songs through `stembeam pipeline` (DirectRunner) into ``folder``/out."""
    from tests.conftest import CC0, CC0_SONGS, MODELS, write_manifest

    manifest = write_manifest(os.path.join(folder, "manifest.csv"), [(os.path.join(CC0, song, "mixture.flac"), song.split(".")[1].lower()) for song in CC0_SONGS])
    output = os.path.join(folder, "out")
    env = dict(os.environ, STEMBEAM_MODEL_PATH=os.environ.get("STEMBEAM_MODEL_PATH", MODELS), STEMBEAM_NO_DOWNLOAD="1", TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-m", "stembeam", "pipeline", "--manifest", manifest, "--output", output, "--runner", "DirectRunner", "--progress_interval", "0"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    return output


def checkout(revision: str, folder: str) -> str:
    """This repository's code at ``revision`` (git archive) in ``folder``; its path."""
    os.makedirs(folder, exist_ok=True)
    archive = subprocess.run(["git", "-C", REPO, "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def measure(code: str, tracks: list, pitch: bool, frames: bool, folder: str) -> dict:
    """``_child`` in a fresh process importing stembeam from the checkout ``code``."""
    spec = os.path.join(folder, "spec.json")
    with open(spec, "w") as handle:
        json.dump({"tracks": tracks, "pitch": pitch, "frames": frames}, handle)
    env = dict(os.environ, PYTHONPATH=code, OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", spec], cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the analysis with {code}'s code failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def table(results: dict, audio_s: float) -> list:
    """Lines: each group's thread-seconds per code version (and their ratio with two)."""
    names = list(results)
    lines = [f"{'group':<18}" + "".join(f"{name:>16}" for name in names) + ("      ratio" if len(names) == 2 else "")]
    rows = [name for name, _ in GROUPS]
    for group in rows + ["other", "total (profiled)", "total"]:
        values = []
        for found in results.values():
            if group == "total":
                values.append(found["total"])
            elif group == "total (profiled)":
                values.append(found["profiled_total"])
            elif group == "other":
                values.append(found["profiled_total"] - sum(found["groups"].values()))
            else:
                values.append(found["groups"][group])
        ratio = f"  {values[0] / values[1]:8.1f}x" if len(values) == 2 and values[1] > 0.005 else ""
        lines.append(f"{group:<18}" + "".join(f"{v:14.2f} s" for v in values) + ratio)
    lines.append(f"(thread-seconds over {audio_s / 60:.1f} min of tracks, each analysed with its stems and mixture in one thread)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=7, help="times each track is analysed (7 x the 3 cc0 songs: the 21-track set)")
    parser.add_argument("--stems-from", help="a `stembeam pipeline` output to analyse (default: the cc0 songs separated now)")
    parser.add_argument("--vocal-pitch", action="store_true", help="with --vocal_pitch")
    parser.add_argument("--feature-frames", action="store_true", help="with --feature_frames")
    parser.add_argument("--baseline", help="a git revision whose code is measured too (e.g. 8d8e047, issue 31's base)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        with open(args.child) as handle:
            print(json.dumps(_child(json.load(handle))))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        output = args.stems_from or _separate(tmp)
        tracks = pipeline_tracks(output, args.copies if not args.stems_from else 1)
        results = {}
        if args.baseline:
            results[f"at {args.baseline}"] = measure(checkout(args.baseline, os.path.join(tmp, "baseline")), tracks, args.vocal_pitch, args.feature_frames, tmp)
        results["this checkout"] = measure(REPO, tracks, args.vocal_pitch, args.feature_frames, tmp)
    options = " ".join(flag for flag, on in (("--vocal_pitch", args.vocal_pitch), ("--feature_frames", args.feature_frames)) if on)
    print(f"feature groups {options or '(default options)'}: {len(tracks)} tracks")
    import soundfile

    for line in table(results, sum(soundfile.info(track["sources"]["mixture"]).duration for track in tracks)):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
