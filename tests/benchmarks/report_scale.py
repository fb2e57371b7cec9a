"""`stembeam report` at scale (not a test): a synthetic output of ROWS tracks made of real rows,
its report's generation time, sizes and time to first render in headless chromium, and the
generation's cost against the separation job of the same corpus.

1. A real output (``--source OUTPUT``, else made here: `stembeam pipeline --features
   --vocal_pitch` of ../shared's three cc0-multitrack songs, Spleeter's example song under a
   hostile id and a file that is not audio; ``--frames`` adds --feature_frames).
2. Its metadata and feature rows replicated under new ids (``{id}#{k}``) into a new output of
   ``--rows`` tracks (the failed row once per 100 tracks; the stems' uris stay the real files).
3. `write_report` on it, in this process: wall and CPU seconds, peak RSS; the front page's bytes
   (index.html, assets/report.js and .css, data/summary.js; plotly.min.js counted apart: the
   same 4.8 MB for any output), the track table's, the largest shard's and the whole folder's.
4. Headless chromium (Debian's, through playwright), a fresh context per round: milliseconds from
   navigation to the front page's summary and plots drawn (performance mark
   ``stembeam:summary``), to the track table usable (``stembeam:table``), and to a track view
   drawn (``stembeam:track``); medians of ``--rounds``.
5. The separation job of the same corpus: ROWS x the real tracks' mean duration (metadata) at a
   real-time factor measured here (``stembeam pipeline`` over ``--rtf-copies`` copies of the three
   songs, one whole process, as tests/benchmarks/throughput.py) or given (``--rtf``); the report's
   share of it, also at 30x real time (the fastest this pipeline runs on these 2-core machines).

Usage: .venv/bin/python -m tests.benchmarks.report_scale [--rows 10000] [--source OUTPUT] [--frames] [--rtf X | --rtf-copies 7] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse

from tests.conftest import CC0, CC0_SONGS, EXAMPLE, write_manifest

HOSTILE_ID = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
FAST_RTF = 30.0
CHROMIUM = os.environ.get("STEMBEAM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def real_output(folder: str, frames: bool) -> str:
    """`stembeam pipeline --features --vocal_pitch` of the cc0 songs, the example under a hostile id and a broken file (its own process)."""
    import subprocess

    from tests.conftest import REPO

    broken = os.path.join(folder, "broken.wav")
    with open(broken, "wb") as handle:
        handle.write(b"not audio")
    rows = [(os.path.join(CC0, song, "mixture.flac"), song) for song in CC0_SONGS] + [(EXAMPLE, HOSTILE_ID), (broken, "broken")]
    manifest = write_manifest(os.path.join(folder, "manifest.csv"), rows)
    output = os.path.join(folder, "real")
    flags = ["--features", "--vocal_pitch", "--allow_failures"] + (["--feature_frames"] if frames else [])
    done = subprocess.run([sys.executable, "-m", "stembeam", "pipeline", "--manifest", manifest, "--output", output, "--progress_interval", "0", *flags],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the real output's pipeline failed:\n{done.stderr[-3000:]}")
    return output


def synthetic_output(source: str, rows: int, folder: str) -> tuple:
    """An output of ``rows`` tracks made of ``source``'s rows: ``(output, mean ok duration s)``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stembeam.pipeline.outputs import read_tables

    tables = read_tables(source)
    metadata = tables.metadata
    status = dict(zip(metadata.column("track_id").to_pylist(), metadata.column("status").to_pylist()))
    ok = sorted(t for t, s in status.items() if s == "ok")
    failed = sorted(t for t, s in status.items() if s == "error")
    plan = [(failed[(k // 100) % len(failed)] if failed and k % 100 == 99 else ok[k % len(ok)]) for k in range(rows)]
    new_ids = [f"{base}#{k:06d}" for k, base in enumerate(plan)]
    output = os.path.join(folder, f"synthetic-{rows}")
    for name, table, sub, file in (("metadata", metadata, "metadata", "tracks"), ("sources", tables.sources, "features", "sources"),
                                   ("tracks", tables.tracks, "features", "tracks"), ("frames", tables.frames, "features", "frames")):
        if table is None:
            continue
        by_id = {}
        for index, track_id in enumerate(table.column("track_id").to_pylist()):
            by_id.setdefault(track_id, []).append(index)
        take, ids = [], []
        for base, new in zip(plan, new_ids):
            take += by_id.get(base, [])
            ids += [new] * len(by_id.get(base, []))
        copied = table.take(pa.array(np.asarray(take, dtype=np.int64)))
        copied = copied.set_column(copied.schema.get_field_index("track_id"), "track_id", pa.array(ids, pa.string()))
        os.makedirs(os.path.join(output, sub), exist_ok=True)
        pq.write_table(copied, os.path.join(output, sub, f"{file}-00000-of-00001.parquet"))
    durations = {t: d for t, d, s in zip(metadata.column("track_id").to_pylist(), metadata.column("duration_s").to_pylist(), metadata.column("status").to_pylist())
                 if s == "ok"}
    mean = statistics.mean(durations[base] for base in plan if base in durations)
    return output, mean


def folder_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(parent, name)) for parent, _, names in os.walk(root) for name in names)


def measure_rtf(folder: str, copies: int) -> float:
    """Seconds of audio per wall second of `stembeam pipeline` over ``copies`` x the three songs, one whole process."""
    from tests.benchmarks.throughput import corpus_manifest, pipeline_job

    manifest, files = corpus_manifest(folder, copies)
    job = pipeline_job(manifest, os.path.join(folder, "rtf"), [], folder, "rtf")
    return 30.0 * len(files) / job["wall"]


def _main_thread_ms(cdp) -> float:
    """CPU time of the page's main thread so far (Chrome's ``ThreadTime`` metric), ms: less
    sensitive than wall time to other processes on a shared machine."""
    return 1000 * next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "ThreadTime")


def browser_times(report: str, track_id: str, rounds: int) -> dict:
    """Medians over ``rounds`` fresh contexts of the ms from navigation to the performance marks."""
    from playwright.sync_api import sync_playwright

    found = {"summary": [], "table": [], "plots": [], "track": []}
    with open(os.path.join(report, "assets", "plotly-alone.html"), "w") as handle:
        handle.write('<!DOCTYPE html><html><head><script src="plotly.min.js"></script></head><body></body></html>')
    index = "file://" + os.path.join(report, "index.html")
    track = "file://" + os.path.join(report, "index.html") + "#track=" + urllib.parse.quote(track_id, safe="")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for _ in range(rounds):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(index)
            page.wait_for_function("() => document.body.dataset.table === 'ready' && document.body.dataset.plots === 'ready'", timeout=120_000)
            for mark in ("summary", "table", "plots"):
                found[mark].append(page.evaluate(f"() => performance.getEntriesByName('stembeam:{mark}')[0].startTime"))
            found.setdefault("index_cpu", []).append(_main_thread_ms(cdp))
            context.close()
            # The track view in a context of its own: nothing cached from the front page.
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(track)
            page.wait_for_function("() => document.body.dataset.track === 'ready'", timeout=120_000)
            found["track"].append(page.evaluate("() => performance.getEntriesByName('stembeam:track')[0].startTime"))
            context.close()
            # What plotly.js alone costs on this machine now: a page of one script tag, nothing else.
            context = browser.new_context()
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto("file://" + os.path.join(report, "assets", "plotly-alone.html"))
            page.wait_for_function("() => window.Plotly !== undefined", timeout=120_000)
            found.setdefault("plotly_alone", []).append(page.evaluate("() => performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd"))
            found.setdefault("plotly_cpu", []).append(_main_thread_ms(cdp))
            context.close()
        browser.close()
    return {mark: statistics.median(values) for mark, values in found.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--source", default=None, help="a real output to replicate (default: made here)")
    parser.add_argument("--frames", action="store_true", help="the real output made here with --feature_frames")
    parser.add_argument("--rtf", type=float, default=None, help="the pipeline's real-time factor (default: measured here)")
    parser.add_argument("--rtf-copies", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", default=None, help="copy the synthetic output (with its report) to this folder")
    args = parser.parse_args(argv)
    os.environ.setdefault("STEMBEAM_NO_DOWNLOAD", "1")
    from stembeam.pipeline.report import write_report

    with tempfile.TemporaryDirectory(prefix="report-scale-") as folder:
        source = args.source or real_output(folder, args.frames)
        output, mean_duration = synthetic_output(source, args.rows, folder)
        print(f"synthetic output: {args.rows} tracks from {source} (mean ok track {mean_duration:.1f} s)")

        wall, cpu = time.perf_counter(), time.process_time()
        write_report(output)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report = os.path.join(output, "report")
        front = sum(os.path.getsize(os.path.join(report, *name.split("/")))
                    for name in ("index.html", "assets/report.js", "assets/report.css", "data/summary.js"))
        plotly = os.path.getsize(os.path.join(report, "assets", "plotly.min.js"))
        table = os.path.getsize(os.path.join(report, "data", "tracks.js"))
        shards = [os.path.join(report, "data", "tracks", name) for name in os.listdir(os.path.join(report, "data", "tracks"))]
        print(f"generation: {wall:.2f} s wall, {cpu:.2f} s CPU (this process, peak RSS {peak_mb:.0f} MB)")
        print(f"front page: {front / 1e3:.1f} kB (index.html, report.js, report.css, summary.js) + plotly.min.js {plotly / 1e6:.2f} MB; "
              f"track table {table / 1e6:.2f} MB; {len(shards)} shards, largest {max(map(os.path.getsize, shards)) / 1e3:.1f} kB; "
              f"whole report {folder_bytes(report) / 1e6:.1f} MB")

        times = browser_times(report, f"{CC0_SONGS[1]}#000001", args.rounds)
        print(f"headless chromium (median of {args.rounds}, ms from navigation): run and failures drawn {times['summary']:.0f}, "
              f"track table usable {times['table']:.0f}, corpus plots drawn {times['plots']:.0f} (plotly.js loaded after the rest), "
              f"a track view drawn {times['track']:.0f}; a page loading plotly.min.js alone: {times['plotly_alone']:.0f}")
        print(f"  main-thread CPU ms: the front page until its plots are drawn {times['index_cpu']:.0f}, of which plotly.min.js alone "
              f"{times['plotly_cpu']:.0f}")

        rtf = args.rtf or measure_rtf(folder, args.rtf_copies)
        audio = args.rows * 0.99 * mean_duration  # the failed tracks (1 in 100) are not separated
        factors = {rtf: f"measured {rtf:.1f}x" if not args.rtf else f"given {rtf:.1f}x", FAST_RTF: f"{FAST_RTF:.0f}x"}
        for factor, label in factors.items():
            separation = audio / factor
            print(f"separation of the same corpus ({audio / 3600:.1f} h of audio) at {label} real time: {separation:.0f} s; "
                  f"report generation = {100 * wall / separation:.2f} % of it")
        if args.keep:
            shutil.copytree(output, args.keep, dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
