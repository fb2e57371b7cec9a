"""The corpus job at corpus scale (issue 21): each track is written as soon as it is separated,
so the job's disk does not grow with the corpus, tracks finish all through the run, a job killed
late keeps what it finished, and RunInference still batches segments of different tracks."""
import hashlib
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import CC0, CC0_SONGS, EXAMPLE, REPO, needs_shared, pipeline_command, stem_folder, write_manifest

pytestmark = needs_shared


def _cc0_manifest(path, copies: int, duration=None) -> str:
    """``copies`` rows of ../shared's 30-s cc0 mixtures in turn, each with its own id."""
    rows = [(os.path.join(CC0, CC0_SONGS[n % 3], "mixture.flac"), f"t{n:02d}", duration or "") for n in range(copies)]
    return write_manifest(path, rows, ("uri", "track_id", "duration"))


def _size(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _markers(output: str) -> int:
    stems = os.path.join(output, "stems")
    if not os.path.isdir(stems):
        return 0
    return sum(os.path.exists(os.path.join(stems, d, ".stembeam.json")) for d in os.listdir(stems))


class Sampler(threading.Thread):
    """Every ``interval`` seconds: ``(seconds since start, bytes under {output}/_work and the job's temporary
    folders, finished tracks)``, and the tracks decoded so far."""

    def __init__(self, output: str, tmp: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval = interval
        self.output, self.tmp, self.samples, self.started = output, tmp, [], time.monotonic()
        self.decoded = []  # (seconds, tracks decoded so far: their progress marks)
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            work = _size(os.path.join(self.output, "_work")) + _size(self.tmp)
            now = time.monotonic() - self.started
            self.samples.append((now, work, _markers(self.output)))
            self.decoded.append((now, _decoded(self.output)))
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()

    def peak(self) -> int:
        return max(work for _, work, _ in self.samples)

    def first_finished(self) -> float:
        return next(t for t, _, done in self.samples if done > 0)

    def finished_at(self, seconds: float) -> int:
        return max([done for t, _, done in self.samples if t <= seconds], default=0)


def _job(manifest, output, tmp, *flags):
    """The corpus job as a process (its temporary space ``tmp``, so it can be measured)."""
    env = {**os.environ, "TMPDIR": tmp}
    return subprocess.Popen(pipeline_command(manifest, output, *flags), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _measured_run(manifest, output, tmp, interval=0.5) -> tuple:
    os.makedirs(tmp, exist_ok=True)
    sampler = Sampler(output, tmp, interval)
    sampler.start()
    process = _job(manifest, output, tmp)
    _, stderr = process.communicate(timeout=900)
    wall = time.monotonic() - sampler.started
    sampler.stop()
    assert process.returncode == 0, stderr[-3000:]
    return sampler, wall, stderr


def _stems(output) -> dict:
    found = {}
    for root, _, files in os.walk(os.path.join(output, "stems")):
        for name in files:
            if name.endswith(".wav"):
                with open(os.path.join(root, name), "rb") as handle:
                    found[os.path.relpath(os.path.join(root, name), output)] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _corpus_runs(folder_factory, sizes, interval=0.5) -> dict:
    """The jobs over ``sizes`` tracks (real songs), measured: ``{copies: (sampler, wall, output, manifest)}``."""
    runs = {}
    for copies in sizes:
        folder = folder_factory.mktemp(f"corpus{copies}")
        manifest = _cc0_manifest(folder / "manifest.csv", copies)
        output = str(folder / "out")
        sampler, wall, _ = _measured_run(manifest, output, str(folder / "tmp"), interval)
        runs[copies] = (sampler, wall, output, manifest)
    return runs


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """4 and 12 real 30-s tracks, sampled every 0.1 s: what `make test` can afford; its checks do
    not depend on how fast the machine is."""
    return _corpus_runs(tmp_path_factory, (4, 12), interval=0.1)


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory):
    """The issue's sizes: 8 and 32 real 30-s tracks (`make test-slow`, on a quiet machine)."""
    return _corpus_runs(tmp_path_factory, (8, 32))


def _check_disk(runs, small, large):
    peaks = {copies: run[0].peak() for copies, run in runs.items()}
    print(f"\npeak bytes of _work/ + temporary folders: {small} tracks {peaks[small] / 1e6:.1f} MB, {large} tracks "
          f"{peaks[large] / 1e6:.1f} MB ({peaks[large] / peaks[small]:.2f}x)")
    assert peaks[small] > 0  # the sampler saw the decoded samples of the tracks in flight
    assert peaks[large] <= 1.25 * peaks[small]


def _decoded(output: str) -> int:
    folder = os.path.join(output, "_work", "progress")
    try:
        return sum(".decoded." in name for name in os.listdir(folder))
    except OSError:
        return 0


def _kill_and_rerun(manifest, tmp_path, reference, total, when) -> tuple:
    """Start the job, SIGKILL it once ``when(output, started)`` holds, run it again: ``(finished
    tracks at the kill, tracks the rerun found done)``; the stems equal ``reference``'s."""
    output, tmp = str(tmp_path / "out"), str(tmp_path / "tmp")
    os.makedirs(tmp)
    started = time.monotonic()
    process = _job(manifest, output, tmp)
    while not when(output, started) and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_at_kill = _markers(output)
    rerun = _job(manifest, output, tmp)
    _, stderr = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, stderr[-3000:]
    summary = [line for line in stderr.splitlines() if line.startswith("stembeam pipeline:")][-1]
    print(f"\nkilled after {time.monotonic() - started:.1f} s with {finished_at_kill} tracks finished; rerun: {summary[:90]}")
    done = int(summary.split(" tracks separated, ")[1].split(" already done")[0])
    assert done == finished_at_kill
    assert _stems(output) == _stems(reference) and len(_stems(output)) == 2 * total
    return finished_at_kill, done


def test_disk_does_not_grow_with_the_tracks(small_corpus):
    _check_disk(small_corpus, 4, 12)


def test_tracks_are_written_while_later_ones_are_still_to_decode(small_corpus):
    """The first track's marker exists before the last track is decoded (the old job wrote no
    stem before every track was inferred)."""
    sampler, _, output, _ = small_corpus[12]
    assert _markers(output) == 12
    first = sampler.first_finished()
    all_decoded = next((t for t, count in sampler.decoded if count == 12), None)
    print(f"\n12 tracks: the first finished at {first:.1f} s, all were decoded at {all_decoded} s")
    assert all_decoded is not None and first < all_decoded


def test_a_job_killed_half_way_keeps_what_it_finished(small_corpus, tmp_path):
    _, _, reference, manifest = small_corpus[12]
    at_kill, _ = _kill_and_rerun(manifest, tmp_path, reference, 12, lambda output, _: _markers(output) >= 6)
    assert at_kill >= 6


@pytest.mark.slow
def test_disk_does_not_grow_with_the_corpus(corpus_runs):
    _check_disk(corpus_runs, 8, 32)


@pytest.mark.slow
def test_tracks_finish_while_the_job_runs(corpus_runs):
    sampler, wall, output, _ = corpus_runs[32]
    assert _markers(output) == 32
    timeline = [(round(t, 1), done) for t, _, done in sampler.samples[::4]]
    print(f"\n32 tracks, wall {wall:.1f} s; (seconds, finished tracks) every 2 s: {timeline}")
    print(f"first track finished at {sampler.first_finished():.1f} s ({sampler.first_finished() / wall:.0%} of the wall time); "
          f"at 50 %: {sampler.finished_at(wall / 2)} tracks")
    assert sampler.first_finished() < 0.3 * wall
    assert sampler.finished_at(0.5 * wall) >= 32 / 3


@pytest.mark.slow
def test_a_job_killed_late_keeps_what_it_finished(corpus_runs, tmp_path):
    """SIGKILL at 75 % of the 32-track job's wall time: the rerun finds at least half the tracks
    done, and its stems equal the uninterrupted run's byte for byte."""
    _, wall, reference, manifest = corpus_runs[32]
    _, done = _kill_and_rerun(manifest, tmp_path, reference, 32, lambda _, started: time.monotonic() - started >= 0.75 * wall)
    assert done >= 16


def test_one_batch_holds_segments_of_two_tracks_and_the_stems_are_right(tmp_path):
    """Three 5-s tracks (one segment each) with --batch_size 2: a batch takes the end of one track
    and the start of the next; in-process, on worker processes and in `stembeam separate`, the
    stems are the same bytes."""
    from stembeam.pipeline.corpus import run_pipeline
    from stembeam.pipeline.summary import counters as summary
    from stembeam.pipeline.separate import SeparateSettings, separate_files

    manifest = write_manifest(tmp_path / "m.csv", [(EXAMPLE, f"e{n}", 2 * n, 5) for n in range(3)], ("uri", "track_id", "offset", "duration"))
    result = run_pipeline(["--manifest", manifest, "--output", str(tmp_path / "in"), "--batch_size", "2"]).result
    counts = summary(result, ("tracks_ok", "batches_across_tracks"))
    assert counts["tracks_ok"] == 3 and counts["batches_across_tracks"] >= 1
    workers = subprocess.run(pipeline_command(manifest, tmp_path / "procs", "--batch_size", "2", "--direct_running_mode=multi_processing", "--direct_num_workers=2"),
                             cwd=REPO, capture_output=True, text=True)
    assert workers.returncode == 0, workers.stderr[-3000:]
    for n in range(3):
        separated = tmp_path / "separate" / f"e{n}"
        assert separate_files([EXAMPLE], str(separated), SeparateSettings(offset=2 * n, duration=5), progress=False) == []
        for stem in ("vocals", "accompaniment"):
            expected = (separated / "audio_example" / f"{stem}.wav").read_bytes()
            for output in ("in", "procs"):
                assert open(os.path.join(stem_folder(str(tmp_path / output), f"e{n}"), f"{stem}.wav"), "rb").read() == expected, (output, n, stem)


def test_a_retried_bundle_finds_its_finished_tracks(tmp_path):
    """A bundle retried after some of its tracks were written: DecodeAndChunk yields their rows
    from this run's markers (also with --no_skip_existing), and only the rest is separated."""
    import json

    import soundfile

    from stembeam.model.decode import load_audio
    from stembeam.model.config import SPLEETER_2STEMS
    from stembeam.transforms.audio import FINISHED_EARLIER, DecodeAndChunk
    from stembeam.transforms.records import Track
    from stembeam.transforms.resume import job_key, source_identity, track_key
    from stembeam.transforms.stem_files import StemFiles

    song = str(tmp_path / "song.wav")
    soundfile.write(song, load_audio(EXAMPLE)[:44100], 44100, subtype="FLOAT")
    track = Track("song", song)
    key = job_key("spleeter:2stems", "f" * 64, "wav", "128k", "soft")
    folder = os.path.join(str(tmp_path / "out"), "stems", "song")
    os.makedirs(folder)
    rows = [{"track_id": "song", "stem": "vocals", "stem_uri": os.path.join(folder, "vocals.wav"), "status": "ok"}]
    open(rows[0]["stem_uri"], "wb").write(b"x" * 10)
    marker = {"key": track_key(key, track, source_identity(song)), "run_id": "run1", "track_id": "song", "rows": rows,
              "stem_bytes": {"vocals.wav": 10}}
    with open(os.path.join(folder, ".stembeam.json"), "w") as handle:
        json.dump(marker, handle)
    for skip_existing, run_id, expect_done in ((False, "run1", True), (False, "run2", False), (True, "run2", True)):
        outputs = list(DecodeAndChunk(SPLEETER_2STEMS, StemFiles(str(tmp_path / "out"), key, run_id=run_id, skip_existing=skip_existing)).process(track))
        tags = [getattr(o, "tag", "chunks") for o in outputs]
        assert (tags == [FINISHED_EARLIER]) == expect_done, (skip_existing, run_id, tags)
