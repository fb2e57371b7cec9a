"""Throughput benchmark (not a test): the pipeline vs Spleeter's official graph, same files, same machine.

Every job runs as a whole process (python start-up, imports, model load included), one after
the other, over the same files (copies of the three 30 s cc0 mixtures; 7 copies: 10.5 min):
  - the official graph (model.meta + checkpoint) doing decode -> separate -> write WAV,
  - `stembeam pipeline` (DirectRunner) in float32 and with --precision bfloat16,
and prints seconds of audio per wall-clock second, each job's ratio to the official one, and
where each job's wall time went (start-up phases; decode, model, inverse STFT and overlap-add,
encode/write, summed from the job's Beam metrics (transforms/timing.py); what is left is the
runner's own cost), and the bound each job's CPU seconds put on its wall on these cores (no job
ends before its CPU seconds, spread over every core, have run). Before that, how long
`stembeam --help` and each `stembeam SUBCOMMAND --help` take (a fresh process each); with ``--features``,
the same float32 job with ``--features`` in every round (right after the float32 job: official,
float32, bfloat16, features, official, ...) and what the features add to the job's wall time
(target: <= 25 %), then one job with ``--features --vocal_pitch``, and where the features'
thread time goes per feature group (tests/benchmarks/feature_groups.py on the stems of the last
--features job; ``--feature-baseline REV`` adds the same breakdown with the code of a git
revision, e.g. 8d8e047). With ``--rounds N`` the official and pipeline jobs run N times, in
turn, and each ratio is of the median walls, with every round's own ratio beside it: on a shared
2-core VM one job's wall varies by about 2 s.
Usage:
  .venv/bin/python -m tests.benchmarks.throughput [--copies 7] [--rounds 1] [--no-help-timings] [--no-features] [--no-vocal-pitch]
      [--feature-baseline REV] [--no-bfloat16] [-- extra Beam options]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from stembeam.model.precision import cpu_flags
from tests.conftest import CC0, CC0_SONGS, MODELS, write_manifest


def corpus_manifest(folder: str, copies: int) -> tuple[str, list[str]]:
    """``{folder}/manifest.csv`` of ``copies`` x ../shared's three cc0 mixtures: its path, and the files it lists."""
    files = [os.path.join(CC0, song, "mixture.flac") for song in CC0_SONGS] * copies
    return write_manifest(os.path.join(folder, "manifest.csv"), [(f, f"track{i:03d}") for i, f in enumerate(files)]), files


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Stages of the breakdown: (label, Beam distributions of transforms/timing.py summed into it).
BREAKDOWN = (
    ("decode", ("decode_ms",)),
    ("model: STFT + U-nets", ("stft_ms", "unets_ms")),
    ("inverse STFT + overlap-add", ("masks_istft_ms", "overlap_add_ms", "wiener_ms")),
    ("encode/write", ("encode_ms",)),
)


def timed_process(kind: str, args: list, folder: str, name: str) -> dict:
    """Run ``tests.benchmarks.timed_job`` in a fresh process: its report, plus ``wall``, the
    whole process's wall time (interpreter start-up included), and ``spawned``."""
    report = os.path.join(folder, f"{name}.json")
    spawned = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tests.benchmarks.timed_job", report, kind, *args], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode:
        raise SystemExit(f"{name} failed (exit code {done.returncode}; negative: killed by that signal):\n{done.stderr[-3000:]}")
    with open(report) as handle:
        found = json.load(handle)
    return {**found, "wall": wall, "cpu": cpu, "spawned": spawned}


def official_job(files: list, output: str, folder: str) -> dict:
    """Spleeter's exported graph doing decode -> separate -> write WAV over ``files``, as one
    whole process (imports, graph load and its first-call warm-up included)."""
    return timed_process("official", [*files, "--output", output], folder, "official")


def pipeline_job(manifest: str, output: str, extra: list, folder: str, name: str) -> dict:
    """``stembeam pipeline`` (DirectRunner) over the manifest, as one whole process."""
    return timed_process("pipeline", ["--manifest", manifest, "--output", output, "--runner", "DirectRunner", "--progress_interval", "0", *extra],
                         folder, name)


def breakdown(job: dict) -> list:
    """Lines of where ``job``'s wall time went: start-up phases (instants), the Beam run, the
    summed seconds of each stage (over all worker threads) and what the runner itself costs."""
    marks, stages = job["marks"], job["stage_ms"]
    run = marks["run_end"] - marks["run_start"]
    seconds = {label: sum(stages.get(name, 0) for name in names) / 1000 for label, names in BREAKDOWN}
    busy = sum(seconds.values())
    lines = [
        f"  start-up {marks['run_start'] - job['spawned']:5.1f} s: python {marks['started'] - job['spawned']:4.1f} s, "
        f"imports {marks['imported'] - marks['started']:4.1f} s, prepare model {marks['model_loaded'] - marks['model_load_start']:4.1f} s"
        f" (model load and graph trace: in the background, while Beam starts), other {marks['run_start'] - marks['imported'] - (marks['model_loaded'] - marks['model_load_start']):4.1f} s",
        f"  run      {run:5.1f} s (Beam run start -> end), then {marks['end'] - marks['run_end']:.1f} s to the summary, "
        f"{job['spawned'] + job['wall'] - marks['end']:.1f} s to exit",
    ]
    for label, value in seconds.items():
        lines.append(f"    {label:<28} {value:6.1f} s  ({100 * value / run:3.0f} % of the run, summed over worker threads)")
    lines.append(f"    {'runner overhead':<28} {run - busy:6.1f} s  (run minus the stages above; negative: stages overlapped)")
    counters = job.get("counters") or {}
    if counters:
        lines.append("    counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))
    return lines


def feature_group_lines(output: str, baseline, folder: str) -> list:
    """tests/benchmarks/feature_groups.py's table for the tracks of the pipeline output ``output``."""
    from tests.benchmarks import feature_groups

    tracks = feature_groups.pipeline_tracks(output, 1)
    results = {}
    if baseline:
        results[f"at {baseline}"] = feature_groups.measure(feature_groups.checkout(baseline, os.path.join(folder, "baseline")), tracks, False, False, folder)
    results["this checkout"] = feature_groups.measure(REPO, tracks, False, False, folder)
    return ["where the features' thread time goes (one thread, feature_groups):", *feature_groups.table(results, 30.0 * len(tracks))]


HELP_COMMANDS = ([], ["separate"], ["export"], ["pipeline"], ["evaluate"], ["prepare-dataset"], ["features"], ["train"])


def help_timings() -> list:
    """``[(command, seconds)]``: wall time of ``python -m stembeam [SUBCOMMAND] --help``."""
    repo = REPO
    timings = []
    for command in HELP_COMMANDS:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "stembeam.pipeline.cli", *command, "--help"], cwd=repo, check=True, capture_output=True)
        timings.append((" ".join(["stembeam", *command, "--help"]), time.perf_counter() - start))
    return timings


def _median_run(found: list) -> dict:
    """The run with the median wall (the lower middle one for an even count), with every
    round's ``walls`` and ``cpus`` (the process's user + system seconds) attached."""
    walls = [job["wall"] for job in found]
    middle = sorted(found, key=lambda job: job["wall"])[(len(found) - 1) // 2]
    return {**middle, "walls": walls, "cpus": [job["cpu"] for job in found]}


def _median(values) -> float:
    return statistics.median(values)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "unknown CPU")
    except OSError:
        return "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=7, help="copies of the three 30 s cc0 mixtures (7 -> 10.5 min, the default; 28 -> 42 min)")
    parser.add_argument("--no-help-timings", dest="help_timings", action="store_false", help="skip timing `stembeam ... --help`")
    parser.add_argument("--no-features", dest="features", action="store_false", help="skip the --features runs")
    parser.add_argument("--no-vocal-pitch", dest="vocal_pitch", action="store_false", help="skip the --features --vocal_pitch run")
    parser.add_argument("--feature-baseline", help="a git revision whose features code is measured beside this checkout's in the feature-group breakdown")
    parser.add_argument("--no-bfloat16", dest="bfloat16", action="store_false", help="skip the --precision bfloat16 run")
    parser.add_argument("--rounds", type=int, default=1, help="run the official and pipeline jobs this many times, in turn; ratios of the median walls")
    args, extra = parser.parse_known_args(argv)
    if args.help_timings:
        for command, seconds in help_timings():
            print(f"{command:<34} {seconds:5.2f} s", flush=True)
    extra = [a for a in extra if a != "--"]
    os.environ.setdefault("STEMBEAM_MODEL_PATH", MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        manifest, files = corpus_manifest(tmp, args.copies)
        audio_seconds = 30.0 * len(files)
        print(f"audio: {len(files)} tracks, {audio_seconds:.0f} s ({audio_seconds / 60:.1f} min); beam options: {' '.join(extra) or '(defaults)'}; "
              f"{_cpu_name()}, {os.cpu_count()} cores{' (amx_bf16)' if 'amx_bf16' in cpu_flags() else ''}; each job a whole process, one after the other", flush=True)
        runs, features_runs = {"official": []}, []
        for round_ in range(args.rounds):
            runs["official"].append(official_job(files, os.path.join(tmp, f"official{round_}"), tmp))
            runs.setdefault("float32", []).append(pipeline_job(manifest, os.path.join(tmp, f"float32-{round_}"), extra, tmp, "float32"))
            if args.bfloat16:
                runs.setdefault("bfloat16", []).append(
                    pipeline_job(manifest, os.path.join(tmp, f"bfloat16-{round_}"), [*extra, "--precision", "bfloat16"], tmp, "bfloat16"))
            if args.features:
                features_runs.append(pipeline_job(manifest, os.path.join(tmp, f"features-{round_}"), [*extra, "--features"], tmp, "features"))
        official = _median_run(runs.pop("official"))
        jobs = {name: _median_run(found) for name, found in runs.items()}
        for job in jobs.values():
            job["round_ratios"] = [theirs / ours for theirs, ours in zip(official["walls"], job["walls"])]
        pitch_s, groups = None, []
        if args.features:
            if args.vocal_pitch:
                pitch_s = pipeline_job(manifest, os.path.join(tmp, "pitch"), [*extra, "--features", "--vocal_pitch"], tmp, "pitch")["wall"]
            groups = feature_group_lines(os.path.join(tmp, f"features-{args.rounds - 1}"), args.feature_baseline, tmp)
    theirs = audio_seconds / official["wall"]
    print(f"official graph decode->separate->wav:  {official['wall']:6.1f} s wall  {theirs:6.2f} s audio / s  (1.00x)  CPU {_median(official['cpus']):5.1f} s")
    for name, job in jobs.items():
        ours = audio_seconds / job["wall"]
        rounds = "" if args.rounds == 1 else "; rounds: " + ", ".join(f"{o:.2f}x" for o in job["round_ratios"])
        print(f"stembeam pipeline --precision {name:<8} {job['wall']:6.1f} s wall  {ours:6.2f} s audio / s  ({ours / theirs:.2f}x the official job{rounds})"
              f"  CPU {_median(job['cpus']):5.1f} s ({_median(official['cpus']) / _median(job['cpus']):.2f}x less than the official job's)")
    cores = os.cpu_count() or 1  # as the header says, and as many as the DirectRunner's workers
    for name, job in jobs.items():
        floor = _median(job["cpus"]) / cores
        print(f"  bound of the {name} job on these {cores} cores: its CPU {_median(job['cpus']):.1f} s / {cores} = {floor:.1f} s of wall at least, "
              f"so at most {official['wall'] / floor:.2f}x the official job (2.5x would need at most {official['wall'] / 2.5 * cores:.1f} CPU s)")
    if args.rounds > 1:
        print(f"(median of {args.rounds} rounds; official walls: {', '.join(f'{w:.1f}' for w in official['walls'])} s; CPU: user + system seconds of each "
              "whole process, medians)")
    print("where the time goes (wall-clock seconds):")
    for name, job in (("official graph", official), *((f"pipeline {name}", job) for name, job in jobs.items())):
        print(f"{name}: {job['wall']:.1f} s")
        if name == "official graph":
            marks, stages = job["marks"], job["stage_ms"]
            print(f"  start-up {marks['run_start'] - job['spawned']:5.1f} s: python {marks['started'] - job['spawned']:4.1f} s, "
                  f"imports {marks['imported'] - marks['started']:4.1f} s, graph load {marks['model_loaded'] - marks['model_load_start']:4.1f} s")
            print(f"  run      {marks['run_end'] - marks['run_start']:5.1f} s: " + ", ".join(
                f"{k[:-3]} {v / 1000:.1f} s" for k, v in stages.items()) + " (graph: STFT, U-nets, masks, inverse STFT)"
                f", then {job['spawned'] + job['wall'] - marks['end']:.1f} s to exit")
            continue
        for line in breakdown(job):
            print(line)
    if features_runs:
        base, features = jobs["float32"], _median_run(features_runs)
        rounds = "" if args.rounds == 1 else " (rounds: " + ", ".join(f"{f / b:.2f}x" for f, b in zip(features["walls"], base["walls"])) + ")"
        print(f"stembeam pipeline --features:         {features['wall']:7.1f} s wall  {features['wall'] / base['wall']:.2f}x the job without features"
              f"{rounds}: features cost {100 * (features['wall'] / base['wall'] - 1):+.0f} % of the job's wall time (target: <= +25 %)")
        if pitch_s is not None:
            print(f"stembeam pipeline --features --vocal_pitch: {pitch_s:7.1f} s wall  {pitch_s / base['wall']:.2f}x the job without features (one run)")
        for line in groups:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
