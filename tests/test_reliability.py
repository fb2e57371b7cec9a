"""Reliability of the corpus job: hostile rows, bounded memory, kill and resume, containment."""
import glob
import os
import signal
import subprocess
import tempfile
import time

import numpy as np
import pytest

from tests import soak
from tests.conftest import CC0, CC0_SONGS, REPO, needs_shared, peak_rss_mb, pipeline_command, write_manifest

pytestmark = needs_shared


# tests/test_features.py imports these by their old names until the features branch uses conftest's.
_manifest, _job, _peak_rss_mb = write_manifest, pipeline_command, peak_rss_mb


def _stems(output):
    """{relative path: bytes} of every stem (not markers) under output/stems."""
    out = {}
    for root, _, files in os.walk(os.path.join(output, "stems")):
        for name in files:
            if not name.startswith("."):
                with open(os.path.join(root, name), "rb") as handle:
                    out[os.path.relpath(os.path.join(root, name), output)] = handle.read()
    return out


@pytest.mark.slow  # 1.5 min; `make soak` runs it with a 60-minute track
def test_hostile_manifest_every_row_ends_once(tmp_path):
    """The soak's rows (long track shortened to 40 s): checked exactly as tests/soak.py does."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    rows = soak.generate(str(folder), long_minutes=40 / 60)
    assert len(rows) >= 200
    manifest = write_manifest(tmp_path / "manifest.csv", [(uri, track_id) for uri, track_id, _ in rows])
    before = set(os.listdir(tmp_path)) | set(glob.glob(os.path.join(tempfile.gettempdir(), "stembeam-decode-*")))
    output = str(tmp_path / "out")
    job = subprocess.run(pipeline_command(manifest, output), cwd=REPO, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr[-3000:]
    problems, counts = soak.check(rows, output, str(tmp_path), before)
    assert problems == []
    # Sanity on what must succeed and what must fail.
    for category in ("good wav", "good flac", "good mp3", "mono", "5.1", "8-channel", "silent", "0.1 s", "dash name", "path-like id"):
        assert counts[category]["error"] == 0, category
    for rate in (8000, 16000, 22050, 48000, 96000):
        assert counts[f"{rate} Hz"]["error"] == 0
    for category in ("zero-byte", "missing", "directory", "non-audio", "duplicate id (second)"):
        assert counts[category]["ok"] == 0, category


@pytest.mark.slow  # 1.5 min for 20 minutes of audio: `make test-slow` (keeps `make test` under 15 minutes)
@pytest.mark.parametrize("long", [20, 60], ids=["20min", "60min"])
def test_memory_does_not_grow_with_track_length(tmp_path, long):
    """Peak RSS of the DirectRunner job on a real song looped to 5 and to 20 minutes (60 minutes
    with ``make test-slow`` and in ``make soak``): at most 150 MB more for the longer track, where
    holding the whole decoded track would add 15 min x 60 x 44100 x 8 B = 317 MB (float32 stereo).
    The bound holds since batches are exact (transforms/inference.py): with Beam's adaptive
    batch sizes the growth varied from +130 to +409 MB between runs."""
    figures = {}
    for minutes in (5, long):
        path = str(tmp_path / f"track_{minutes}.flac")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", "file:" + os.path.join(CC0, CC0_SONGS[1], "mixture.flac"),
             "-t", str(minutes * 60), "-c:a", "flac", "file:" + path],
            check=True,
        )
        manifest = write_manifest(tmp_path / f"m{minutes}.csv", [(path, f"t{minutes}")])
        figures[minutes] = peak_rss_mb(pipeline_command(manifest, str(tmp_path / f"out{minutes}")))
        assert os.path.getsize(str(tmp_path / f"out{minutes}" / "stems" / f"t{minutes}" / "vocals.wav")) == 44 + minutes * 60 * 44100 * 4
    growth = figures[long] - figures[5]
    print(f"\npeak RSS (real music): 5-minute track {figures[5]:.0f} MB, {long}-minute track {figures[long]:.0f} MB, "
          f"ratio {figures[long] / figures[5]:.2f}, {growth:+.0f} MB")
    assert figures[long] <= 1.5 * figures[5]
    decoded_mb = (long - 5) * 60 * 44100 * 8 / 2**20
    assert growth <= 150, f"{growth:+.0f} MB from 5 to {long} minutes ({decoded_mb:.0f} MB: the decoded difference)"


def _wait_for(predicate, process, timeout=300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _markers(output):
    folder = os.path.join(output, "stems")
    return [d for d in os.listdir(folder) if os.path.exists(os.path.join(folder, d, ".stembeam.json"))] if os.path.isdir(folder) else []


def test_killed_job_resumes_to_byte_identical_stems(tmp_path):
    """SIGKILL while the first tracks are decoded, then again once tracks are being written; the
    third run finishes and every stem equals an uninterrupted run's, byte for byte; no
    temporaries remain."""
    rows = [(os.path.join(CC0, song, "mixture.flac"), f"{song}-{copy}") for copy in range(3) for song in CC0_SONGS]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    reference = str(tmp_path / "reference")
    subprocess.run(pipeline_command(manifest, reference), cwd=REPO, check=True, capture_output=True)
    output = str(tmp_path / "out")
    decoding = os.path.join(output, "_work", "local")
    killed_at = []
    for moment, ready in (("decoding", lambda: os.path.isdir(decoding) and len(os.listdir(decoding)) >= 1), ("mid-writing", lambda: len(_markers(output)) >= 1)):
        process = subprocess.Popen(pipeline_command(manifest, output), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reached = _wait_for(ready, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at.append((moment, reached, len(_markers(output))))
    print(f"\nkills (moment, reached, finished tracks at kill): {killed_at}")
    assert killed_at[0][1] and killed_at[0][2] == 0  # the first kill hit before any track was written
    assert killed_at[1][1] and killed_at[1][2] < len(rows)  # the second while tracks were being written
    done_before = set(_markers(output))
    finished = subprocess.run(pipeline_command(manifest, output), cwd=REPO, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"{len(rows) - len(done_before)} tracks separated, {len(done_before)} already done, 0 failed" in finished.stderr
    ours, theirs = _stems(output), _stems(reference)
    assert sorted(ours) == sorted(theirs) and len(ours) == 2 * len(rows)
    assert all(ours[name] == theirs[name] for name in theirs)
    leftovers = [os.path.join(r, n) for r, ds, fs in os.walk(output) for n in fs + ds if n.startswith(".tmp-") or n == "_work"]
    assert leftovers == []


def test_path_like_ids_and_dash_names_stay_inside_output(tmp_path):
    """Track ids like ``../../x`` or absolute paths, and files named ``-y.wav`` (resampled, so
    ffmpeg decodes them) stay inside --output and never act as ffmpeg options."""
    from stembeam.model.decode import load_audio
    from stembeam.model.encode import write_audio

    inputs = tmp_path / "in"
    inputs.mkdir()
    t = np.arange(48000 * 2) / 48000
    tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32)
    dash = str(inputs / "-y.wav")
    write_audio(dash, tone, 48000)
    assert load_audio(dash).shape == (88200, 2)  # ffmpeg read it as a file, at 44.1 kHz
    escape = str(tmp_path / "escaped")
    rows = [(dash, "../../escaped"), (dash, escape), (dash, "-rf"), (dash, "..")]
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    output = tmp_path / "deep" / "out"
    job = subprocess.run(pipeline_command(manifest, str(output), "--codec", "flac"), cwd=REPO, capture_output=True, text=True)
    assert job.returncode == 0, job.stderr[-3000:]
    assert "4 tracks separated" in job.stderr
    assert sorted(os.listdir(tmp_path)) == ["deep", "in", "manifest.csv"]
    assert os.listdir(tmp_path / "deep") == ["out"]
    folders = sorted(os.listdir(output / "stems"))
    assert len(folders) == 4 and not any(f.startswith(("-", ".")) or "/" in f for f in folders)
    for folder in folders:
        assert load_audio(str(output / "stems" / folder / "vocals.flac")).shape == (88200, 2)
