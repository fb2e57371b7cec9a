"""The Beam corpus job on the DirectRunner: same stems as `stembeam separate`, failures as rows, resumable."""
import os
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest

from stembeam.pipeline.corpus import run
from stembeam.pipeline.separate import SeparateSettings, separate_files
from tests.conftest import CC0, CC0_SONGS, EXAMPLE, REPO, needs_shared, pipeline_command, read_wav, snr_db, stem_folder, write_manifest

pytestmark = needs_shared
STEMS = ("vocals", "accompaniment")


def _metadata(output):
    folder = os.path.join(output, "metadata")
    return pq.read_table([os.path.join(folder, f) for f in sorted(os.listdir(folder))]).to_pylist()


def _snapshot(folder):
    """{relative path: (bytes, mtime_ns)} of every file under folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, folder)] = (handle.read(), os.stat(path).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory):
    """The three cc0 mixtures plus a missing file, a text file named .mp3 and a zero-byte .wav."""
    tmp = tmp_path_factory.mktemp("corpus")
    (tmp / "lyrics.mp3").write_text("not audio at all\n")
    (tmp / "empty.wav").write_bytes(b"")
    rows = [(os.path.join(CC0, song, "mixture.flac"), song) for song in CC0_SONGS]
    rows += [(str(tmp / "missing.flac"), "missing"), (str(tmp / "lyrics.mp3"), "lyrics"), (str(tmp / "empty.wav"), "empty")]
    manifest = write_manifest(tmp / "manifest.csv", rows)
    output = str(tmp / "out")
    result = subprocess.run(pipeline_command(manifest, output, "--runner", "DirectRunner"), capture_output=True, text=True, cwd=REPO)
    return manifest, output, result


def test_failures_are_rows_and_the_job_exits_3(corpus_run):
    _, output, result = corpus_run
    assert result.returncode == 3, result.stderr[-3000:]  # finished, some rows failed
    assert "stembeam pipeline: 3 tracks separated, 0 already done, 3 failed; 90 s of audio, 9 chunks inferred" in result.stderr
    rows = _metadata(output)
    ok = [r for r in rows if r["status"] == "ok"]
    errors = {r["track_id"]: r["error"] for r in rows if r["status"] == "error"}
    assert sorted((r["track_id"], r["stem"]) for r in ok) == sorted((s, stem) for s in CC0_SONGS for stem in STEMS)
    assert errors.keys() == {"missing", "lyrics", "empty"}
    assert errors["missing"].endswith("missing.flac: file not found")
    assert "lyrics.mp3: not decodable as audio" in errors["lyrics"]
    assert errors["empty"].endswith("empty.wav: empty file (0 bytes)")
    for row in ok:
        assert os.path.exists(row["stem_uri"]) and row["duration_s"] == pytest.approx(30.0)
        assert row["sample_rate"] == 44100 and row["channels"] == 2 and 0 < row["rms"] < row["peak"]
        assert row["model"] == "spleeter:2stems" and row["codec"] == "wav" and row["created_at"] is not None
    leftovers = [f for _, _, files in os.walk(output) for f in files if f.startswith(".tmp-")]
    assert leftovers == []


def test_pipeline_stems_equal_separate_stems(corpus_run, tmp_path):
    _, output, _ = corpus_run
    song = os.path.join(CC0, "2.Lithium", "mixture.flac")
    manifest = write_manifest(tmp_path / "example.csv", [(EXAMPLE, "example")])
    assert run(["--manifest", manifest, "--output", str(tmp_path / "out")]) == 0
    assert separate_files([song, EXAMPLE], str(tmp_path / "single"), progress=False) == []
    for stem in STEMS:
        for pipeline_file, single_file in (
            (os.path.join(stem_folder(output, "2.Lithium"), f"{stem}.wav"), tmp_path / "single" / "mixture" / f"{stem}.wav"),
            (tmp_path / "out" / "stems" / "example" / f"{stem}.wav", tmp_path / "single" / "audio_example" / f"{stem}.wav"),
        ):
            ours, single = read_wav(str(pipeline_file)), read_wav(str(single_file))
            assert ours.shape == single.shape
            steps = int(np.max(np.abs(ours - single)) * 32768)
            print(f"pipeline vs separate {pipeline_file}: largest difference {steps} 16-bit steps")
            assert steps <= 1


def test_mwf_pipeline_equals_separate_mwf(tmp_path):
    song = os.path.join(CC0, "2.Lithium", "mixture.flac")
    manifest = write_manifest(tmp_path / "m.csv", [(EXAMPLE, "example"), (song, "lithium")])
    assert run(["--manifest", manifest, "--output", str(tmp_path / "out"), "--mwf", "--batch_size", "3"]) == 0
    assert separate_files([song, EXAMPLE], str(tmp_path / "single"), SeparateSettings(mwf=True), progress=False) == []
    for track, name in (("example", "audio_example"), ("lithium", "mixture")):
        for stem in STEMS:
            ours = read_wav(str(tmp_path / "out" / "stems" / track / f"{stem}.wav"))
            single = read_wav(str(tmp_path / "single" / name / f"{stem}.wav"))
            snr = snr_db(single, ours) if np.any(single != ours) else float("inf")
            print(f"mwf pipeline vs separate {track}/{stem}: SNR {snr:.1f} dB")
            assert snr >= 60.0


def test_rerun_skips_finished_tracks_and_completes_missing(corpus_run, tmp_path):
    manifest, first_output, _ = corpus_run
    output = str(tmp_path / "out")
    shutil.copytree(first_output, output)
    before = _snapshot(os.path.join(output, "stems"))
    sodium = os.path.basename(stem_folder(output, "3.Sodium"))
    shutil.rmtree(os.path.join(output, "stems", sodium))
    result = subprocess.run(pipeline_command(manifest, output, "--allow_failures"), capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 tracks separated, 2 already done, 3 failed" in result.stderr
    after = _snapshot(os.path.join(output, "stems"))
    assert after.keys() == before.keys()
    for path, (data, mtime) in before.items():
        if not path.startswith(sodium):
            assert after[path] == (data, mtime)  # untouched
        elif not path.endswith(".stembeam.json"):  # the redone track's marker holds new timestamps
            assert after[path][0] == data  # redone stems are byte-identical
    rows = _metadata(output)
    assert sum(r["status"] == "ok" for r in rows) == 6 and sum(r["status"] == "error" for r in rows) == 3
