"""Damaged, odd and hostile inputs never hang, crash or lie (issue 28).

The corpus (tests/damaged_corpus.py: generated from a real song) goes through ``stembeam
pipeline`` mixed with good files, through ``stembeam separate`` and through the API: every row
ends as correct stems, an error row naming the file, or stems with the damage recorded; the good
files' stems are the bytes of a run without the bad rows.
"""
import glob
import hashlib
import os
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest

from stembeam.model.decode import AudioDamageWarning, AudioDecodeError, DecodeLimits, decode_to_file, load_audio
from stembeam.model.decode_worker import pool
from stembeam.model.decoders import DecodeRequest
from tests.conftest import REPO, needs_shared, run_cli, write_manifest
from tests.damaged_corpus import make_corpus

pytestmark = needs_shared


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(str(tmp_path_factory.mktemp("damaged")))


def _tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, MB (Linux /proc)."""
    children, rss = {}, {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            pid = int(stat.split("/")[2])
            children.setdefault(int(fields[1]), []).append(pid)
            rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def _sha(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.fixture(scope="module")
def pipeline_run(corpus, tmp_path_factory):
    """The whole corpus (and the good files again under other ids) in one manifest, through
    `stembeam pipeline` in its own process: its exit code, wall, peak RSS of its process tree,
    metadata rows and output folder."""
    folder = tmp_path_factory.mktemp("mixed")
    rows = [(case.path, case.name.replace(".", "-")) for case in corpus]
    manifest = write_manifest(folder / "manifest.csv", rows)
    output = str(folder / "out")
    process = subprocess.Popen([sys.executable, "-m", "stembeam", "pipeline", "--manifest", manifest, "--output", output,
                                "--progress_interval", "0"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    peak, started = 0.0, time.monotonic()
    stderr = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr.read().splitlines()), daemon=True)
    reader.start()
    while process.poll() is None and time.monotonic() - started < 600:
        peak = max(peak, _tree_rss_mb(process.pid))
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    wall = time.monotonic() - started
    reader.join(timeout=10)
    table = pq.read_table(os.path.join(output, "metadata", "tracks-00000-of-00001.parquet")).to_pylist()
    return {"code": process.returncode, "wall": wall, "peak_mb": peak, "rows": table, "output": output, "stderr": stderr}


def test_the_corpus_through_the_pipeline_ends_every_row_rightly(corpus, pipeline_run):
    run = pipeline_run
    print(f"\ndamaged corpus through the pipeline: {len(corpus)} rows, {run['wall']:.1f} s wall, peak RSS {run['peak_mb']:.0f} MB (process tree)")
    assert run["code"] == 3  # finished; some rows failed
    assert run["wall"] < 120 and run["peak_mb"] < 2500
    by_id = {}
    for row in run["rows"]:
        by_id.setdefault(row["track_id"], []).append(row)
    for case in corpus:
        rows = by_id[case.name.replace(".", "-")]
        if case.outcome == "error":
            (row,) = rows
            assert row["status"] == "error" and case.path in row["error"] and case.says in row["error"], (case, row)
            assert not os.path.exists(os.path.join(run["output"], "stems", case.name.replace(".", "-"))), case
            continue
        assert {row["status"] for row in rows} == {"ok"} and len(rows) == 2, (case, rows)
        for row in rows:
            if case.outcome == "ok":
                assert row["decode_warnings"] is None, (case, row)
            else:
                assert row["decode_warnings"] and case.says in row["decode_warnings"], (case, row)
            assert row["duration_s"] > 0 and os.path.getsize(row["stem_uri"]) > 44
    warned = [line for line in run["stderr"] if line.startswith("warning: ")]
    assert len(warned) == sum(case.outcome == "damaged" for case in corpus)  # one line per damaged file
    assert all(any(case.path in line for line in warned) for case in corpus if case.outcome == "damaged")
    assert not any("Traceback" in line for line in run["stderr"])
    # Files that decode to another file's samples give that file's stems, byte for byte.
    stems = {row["track_id"]: {r["stem"]: _sha(r["stem_uri"]) for r in by_id[row["track_id"]]} for row in run["rows"] if row["status"] == "ok"}
    for case in corpus:
        if case.same_as:
            assert stems[case.name.replace(".", "-")] == stems[case.same_as.replace(".", "-")], case


def test_good_stems_are_the_bytes_of_a_run_without_the_bad_rows(corpus, pipeline_run, tmp_path):
    good = [case for case in corpus if case.outcome == "ok"]
    manifest = write_manifest(tmp_path / "good.csv", [(case.path, case.name.replace(".", "-")) for case in good])
    code, _ = run_cli("pipeline", "--manifest", manifest, "--output", str(tmp_path / "good"), "--progress_interval", "0")
    assert code == 0
    alone = pq.read_table(str(tmp_path / "good" / "metadata" / "tracks-00000-of-00001.parquet")).to_pylist()
    mixed = {(row["track_id"], row["stem"]): row for row in pipeline_run["rows"]}
    assert len(alone) == 2 * len(good)
    for row in alone:
        assert _sha(row["stem_uri"]) == _sha(mixed[row["track_id"], row["stem"]]["stem_uri"]), row["track_id"]


def test_the_corpus_through_separate(corpus, tmp_path):
    """One line per damaged file (a warning) or failed file (an error), stems of every other,
    nothing half-written; exit 3 (some files failed), 0 with --allow-failures."""
    out = tmp_path / "out"
    paths = [case.path for case in corpus]
    code, lines = run_cli("separate", "--no-progress", "-o", str(out), "-f", "{filename}-{instrument}.{codec}", *paths)
    assert code == 3
    for case in corpus:
        said = [line for line in lines if case.path in line]
        if case.outcome == "ok":
            assert said == [] and os.path.exists(out / f"{os.path.splitext(case.name)[0]}-vocals.wav"), case
        elif case.outcome == "damaged":
            assert len(said) == 1 and said[0].startswith(f"warning: {case.path}: ") and case.says in said[0], (case, said)
        else:
            assert len(said) == 1 and said[0].startswith(f"error: {case.path}: ") and case.says in said[0], (case, said)
            assert not glob.glob(str(out / f"{glob.escape(os.path.splitext(case.name)[0])}-*")), case
    assert lines[-1] == f"separated {sum(c.outcome != 'error' for c in corpus)} of {len(corpus)} files into {out}"
    assert not [name for name in os.listdir(out) if name.startswith(".tmp-")]
    good = next(case.path for case in corpus if case.name == "good.wav")
    assert run_cli("separate", "--no-progress", "-o", str(out), "--allow-failures", good, corpus[-1].path)[0] == 0


def test_the_corpus_through_the_api(corpus):
    """load_audio: clean files say nothing, damaged ones warn naming the file (raise with
    ``strict``), others raise AudioDecodeError naming the file and the reason."""
    for case in corpus:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                samples = load_audio(case.path)
            except AudioDecodeError as error:
                assert case.outcome == "error" and str(error).startswith(case.path) and case.says in str(error), (case, error)
                continue
        assert case.outcome != "error", case
        damage = [w for w in seen if issubclass(w.category, AudioDamageWarning)]
        assert samples.ndim == 2 and samples.shape[1] == 2 and np.all(np.isfinite(samples))
        if case.outcome == "ok":
            assert damage == [], (case, [str(w.message) for w in seen])
        else:
            assert len(damage) == 1 and str(damage[0].message).startswith(case.path) and case.says in str(damage[0].message)
            with pytest.raises(AudioDecodeError, match="damaged"):
                load_audio(case.path, strict=True)


def test_strict_decoding_makes_damage_an_error_and_removes_earlier_stems(corpus, tmp_path):
    """A rerun with --strict_decoding turns the damaged row that an earlier run separated into
    an error row and removes its stems; clean rows are kept (skipped)."""
    cases = [c for c in corpus if c.name in ("good-flac.flac", "mid-flip.flac")]
    manifest = write_manifest(tmp_path / "m.csv", [(c.path, c.name.replace(".", "-")) for c in cases])
    out = tmp_path / "out"
    assert run_cli("pipeline", "--manifest", manifest, "--output", str(out), "--progress_interval", "0")[0] == 0
    assert os.path.exists(out / "stems" / "mid-flip-flac" / "vocals.wav")
    code, lines = run_cli("pipeline", "--manifest", manifest, "--output", str(out), "--progress_interval", "0", "--strict_decoding")
    assert code == 3
    assert any("0 tracks separated, 1 already done, 1 failed" in line for line in lines)
    rows = {row["track_id"]: row for row in pq.read_table(str(out / "metadata")).to_pylist()}
    assert rows["mid-flip-flac"]["status"] == "error" and "damaged (--strict_decoding)" in rows["mid-flip-flac"]["error"]
    assert rows["good-flac-flac"]["status"] == "ok"
    assert not os.path.exists(out / "stems" / "mid-flip-flac" / "vocals.wav")


def test_a_decoder_crash_is_that_files_error(corpus, tmp_path):
    """tensorflow-io divides by zero (SIGFPE) on a WAV with block align 0, as the release routed
    it: the worker dies, the file is an error naming the signal, the next file decodes."""
    ba0 = next(case.path for case in corpus if case.name == "block-align-0.wav")
    with pytest.raises(AudioDecodeError, match=r"the decoder crashed on it \(killed by SIGFPE\)"):
        pool().decode(DecodeRequest(ba0, decoders=("tfio",)), str(tmp_path / "x.f32"))
    good = next(case.path for case in corpus if case.name == "good.wav")
    assert decode_to_file(good, str(tmp_path / "y.f32")).frames == 6 * 44100


def test_a_decode_that_overruns_its_deadline_is_stopped(tmp_path):
    """A decoder that runs longer than the file's claimed length allows is killed with what it
    started (ffmpeg): the file's error, nothing left running."""
    path = str(tmp_path / "hour.wav")
    with open(path, "wb") as handle:  # an hour of silence, sparse: resampled by ffmpeg
        import struct

        frames = 3600 * 22050
        handle.write(b"RIFF" + struct.pack("<I", 36 + 4 * frames) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 2, 22050, 88200, 4, 16))
        handle.write(b"data" + struct.pack("<I", 4 * frames))
        handle.truncate(44 + 4 * frames)
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match=r"decoding did not finish within \d+ s: stopped"):
        decode_to_file(path, str(tmp_path / "x.f32"), limits=DecodeLimits(deadline_s=1.0, min_speed=1e6))
    assert time.monotonic() - started < 20
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", f"file:{path}"], capture_output=True, text=True).stdout.split()
    assert leftover == []  # its ffmpeg went with the worker


def test_decoding_stops_at_the_length_a_track_may_last(corpus, tmp_path):
    good = next(case.path for case in corpus if case.name == "streamed.wav")
    with pytest.raises(AudioDecodeError, match="decoding gave more samples than the 2 s a track may last: stopped"):
        decode_to_file(good, str(tmp_path / "x.f32"), limits=DecodeLimits(max_seconds=2.0))
    assert os.path.getsize(tmp_path / "x.f32") <= 2 * 44100 * 8 + 2**18 * 8  # at most a block past the limit


def test_a_lying_rate_is_refused_before_any_decoding(corpus, tmp_path):
    """A 1 Hz header would become 44,100 times its size once resampled (46 GB for 530 KB)."""
    path = next(case.path for case in corpus if case.name == "rate-1hz.wav")
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match=r"claims 1 Hz, outside 4000\.\.768000 Hz"):
        decode_to_file(path, str(tmp_path / "x.f32"))
    assert time.monotonic() - started < 10 and not os.path.exists(tmp_path / "x.f32") or os.path.getsize(tmp_path / "x.f32") == 0
