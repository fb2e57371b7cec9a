"""Throughput benchmark (not a test): the pipeline vs Spleeter's official graph, same files, same machine.

Prints seconds of audio per wall-clock second for
  - the whole `stembeam pipeline` job (DirectRunner; startup, model export, decode, inference, writing),
  - the official graph (model.meta + checkpoint) doing decode -> separate -> write WAV in one warm process,
and their ratio; first, how long `stembeam --help` and each `stembeam SUBCOMMAND --help` take
(a fresh process each, as a user types them); then the same job with ``--features`` and with
``--features --vocal_pitch`` on the same files, and what the features add to the job's wall time
(target: <= 25 % without pitch). Usage:
  .venv/bin/python -m tests.benchmarks.throughput [--copies 7] [-- extra Beam options]
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

from tests.conftest import CC0, CC0_SONGS, MODELS


def _manifest(folder: str, copies: int) -> tuple[str, list[str]]:
    files = [os.path.join(CC0, song, "mixture.flac") for song in CC0_SONGS] * copies
    path = os.path.join(folder, "manifest.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uri", "track_id"])
        writer.writerows((f, f"track{i:03d}") for i, f in enumerate(files))
    return path, files


def official_baseline(files: list[str], output: str) -> float:
    """Seconds of wall time for decode -> official graph -> WAV over ``files`` (after a warm-up)."""
    from model.audio import load_audio, write_audio
    from tests.reference_graph import OfficialGraph

    graph = OfficialGraph(os.path.join(MODELS, "2stems"))
    graph.separate(load_audio(files[0])[: 44100 * 5])  # warm-up, not timed
    start = time.perf_counter()
    for i, path in enumerate(files):
        for stem, signal in graph.separate(load_audio(path)).items():
            write_audio(os.path.join(output, f"track{i:03d}", f"{stem}.wav"), signal)
    return time.perf_counter() - start


def pipeline_job(manifest: str, output: str, extra: list[str]) -> float:
    from pipeline.corpus import run

    start = time.perf_counter()
    run(["--manifest", manifest, "--output", output, "--runner", "DirectRunner", *extra])
    return time.perf_counter() - start


HELP_COMMANDS = ([], ["separate"], ["export"], ["pipeline"], ["evaluate"], ["prepare-dataset"], ["features"], ["train"])


def help_timings() -> list:
    """``[(command, seconds)]``: wall time of ``python -m pipeline.cli [SUBCOMMAND] --help``."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    timings = []
    for command in HELP_COMMANDS:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline.cli", *command, "--help"], cwd=repo, check=True, capture_output=True)
        timings.append((" ".join(["stembeam", *command, "--help"]), time.perf_counter() - start))
    return timings


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=28, help="copies of the three 30 s cc0 mixtures (28 -> 42 min; 7 -> 10.5 min)")
    parser.add_argument("--no-vocal-pitch", dest="vocal_pitch", action="store_false", help="skip the --features --vocal_pitch run")
    args, extra = parser.parse_known_args(argv)
    for command, seconds in help_timings():
        print(f"{command:<34} {seconds:5.2f} s", flush=True)
    extra = [a for a in extra if a != "--"]
    os.environ.setdefault("STEMBEAM_MODEL_PATH", MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, files = _manifest(tmp, args.copies)
        audio_seconds = 30.0 * len(files)
        pipeline_s = pipeline_job(manifest, os.path.join(tmp, "pipeline"), extra)
        official_s = official_baseline(files, os.path.join(tmp, "official"))
        features_s = pipeline_job(manifest, os.path.join(tmp, "features"), [*extra, "--features"])
        pitch_s = pipeline_job(manifest, os.path.join(tmp, "pitch"), [*extra, "--features", "--vocal_pitch"]) if args.vocal_pitch else None
    ours, theirs = audio_seconds / pipeline_s, audio_seconds / official_s
    print(f"audio: {len(files)} tracks, {audio_seconds:.0f} s; beam options: {' '.join(extra) or '(defaults)'}")
    print(f"stembeam pipeline (whole job):        {pipeline_s:7.1f} s wall  {ours:6.2f} s audio / s")
    print(f"official graph decode->separate->wav: {official_s:7.1f} s wall  {theirs:6.2f} s audio / s")
    print(f"ratio pipeline / official: {ours / theirs:.2f}x")
    print(f"stembeam pipeline --features:         {features_s:7.1f} s wall  features cost {100 * (features_s / pipeline_s - 1):+.0f} % of the job's wall time")
    if pitch_s is not None:
        print(f"stembeam pipeline --features --vocal_pitch: {pitch_s:7.1f} s wall  features cost {100 * (pitch_s / pipeline_s - 1):+.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
