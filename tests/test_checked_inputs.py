"""Everything a user can get wrong is checked before the work and said in one line naming the
option or file; nothing half-written; outputs never overwrite inputs; the API's inputs are
audio or a ValueError; local jobs run on the runner the tests cover (issue 28)."""
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest

from stembeam.model.encode import AudioEncodeError, AudioWriter
from tests.conftest import EXAMPLE, MODELS, REPO, SHARED, needs_shared, run_cli, write_manifest

pytestmark = needs_shared
RATE = 44100


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """5 s of the example song as 16-bit WAV, and a manifest of it."""
    from stembeam.model.decode import load_audio
    from stembeam.model.encode import write_audio

    folder = tmp_path_factory.mktemp("song")
    path = str(folder / "song.wav")
    write_audio(path, load_audio(EXAMPLE, duration=5.0))
    return path, write_manifest(folder / "manifest.csv", [(path, "song")])


# --- 10. options checked before any work, naming the option ------------------------------------

@pytest.mark.parametrize("flags,says", [
    (["-d", "-2"], "-d/--duration must be a finite number of seconds > 0, not -2.0"),
    (["-s", "-1"], "-s/--offset must be a finite number of seconds >= 0, not -1.0"),
    (["-s", "nan"], "-s/--offset must be a finite number of seconds >= 0, not nan"),
    (["-d", "inf"], "-d/--duration must be a finite number of seconds > 0, not inf"),
    (["--mwf-block-frames", "-5"], "--mwf-block-frames -5: must be between 0 (the whole track) and 512"),
    (["-c", "mp3", "-b", "abc"], "-b/--bitrate: bitrate 'abc' is not a bitrate"),
])
def test_separate_options_are_checked_before_any_work(song, tmp_path, flags, says):
    code, lines = run_cli("separate", "-o", str(tmp_path / "out"), *flags, song[0])
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: stembeam separate: ") and says in lines[0]
    assert not os.path.exists(tmp_path / "out")


def test_an_offset_past_the_end_names_the_offset(song, tmp_path):
    code, lines = run_cli("separate", "--no-progress", "-o", str(tmp_path / "out"), "-s", "40", song[0])
    assert code == 3 and lines[0] == f"error: {song[0]}: offset 40 s is at or past its end (5.00 s long)"


@pytest.mark.parametrize("flags,says", [
    (["--bitrate", "abc", "--codec", "mp3"], "error: --bitrate: bitrate 'abc' is not a bitrate"),
    (["--batch_size", "0"], "error: --batch_size 0: must be at least 1"),
    (["--mwf", "--mwf_block_frames", "-5"], "error: --mwf_block_frames -5: must be between 1 and T=512"),
])
def test_pipeline_options_are_checked_before_any_work(song, tmp_path, flags, says):
    code, lines = run_cli("pipeline", "--manifest", song[1], "--output", str(tmp_path / "out"), "--progress_interval", "0", *flags)
    assert code == 1 and lines == [lines[0]] and lines[0].startswith(says)
    assert not os.path.exists(tmp_path / "out" / "stems")


def test_bad_spans_in_a_manifest_are_error_rows(song, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,track_id,offset,duration\n{song[0]},a,-1,\n{song[0]},b,0,nan\n{song[0]},c,1,2\n")
    code, lines = run_cli("pipeline", "--manifest", str(manifest), "--output", str(tmp_path / "out"), "--progress_interval", "0")
    assert code == 3
    rows = {row["track_id"]: row for row in pq.read_table(str(tmp_path / "out" / "metadata")).to_pylist()}
    assert "offset must be a finite number of seconds >= 0, not -1.0" in rows["a"]["error"]
    assert "duration must be a finite number of seconds > 0, not nan" in rows["b"]["error"]
    assert rows["c"]["status"] == "ok" and rows["c"]["duration_s"] == 2.0


# --- 7. job-level failures: one line naming the cause, exit 1 ------------------------------------

def _broken_model(tmp_path, damage):
    folder = tmp_path / "2stems"
    folder.mkdir()
    for name in os.listdir(os.path.join(MODELS, "2stems")):
        shutil.copy(os.path.join(MODELS, "2stems", name), folder / name)
    damage(folder)
    return str(folder)


def _truncate_data(folder):
    data = folder / "model.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1_000_000])


def _corrupt_index(folder):
    (folder / "model.index").write_bytes((folder / "model.index").read_bytes()[:100])


@pytest.mark.parametrize("damage,file_name", [(_truncate_data, "model.data-00000-of-00001"), (_corrupt_index, "model.index")])
@pytest.mark.parametrize("command", ["pipeline", "separate"])
def test_a_damaged_model_is_one_line_naming_its_file(song, tmp_path, damage, file_name, command):
    model = _broken_model(tmp_path, damage)
    if command == "pipeline":
        code, lines = run_cli("pipeline", "--manifest", song[1], "--output", str(tmp_path / "out"), "--model", model, "--progress_interval", "0")
    else:
        code, lines = run_cli("separate", "-o", str(tmp_path / "out"), "-p", model, song[0])
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {os.path.join(model, file_name)}: cannot be read, truncated or corrupt (")


_FULL_DISK = """
import errno, wave
def full(self, data):
    raise OSError(errno.ENOSPC, "No space left on device")
wave.Wave_write.writeframes = full
"""


def test_a_full_disk_fails_the_job_in_one_line_and_leaves_nothing(song, tmp_path):
    out = tmp_path / "out"
    code, lines = run_cli("pipeline", "--manifest", song[1], "--output", str(out), "--progress_interval", "0", inject=_FULL_DISK)
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: OSError: [Errno 28] writing the stems of track song under {out}/stems/song: No space left on device")
    assert not os.path.exists(out / "stems" / "song") and not os.path.exists(out / "_work")


_SECOND_STEM_FULL = """
import errno
from stembeam.model import encode
calls = []
real = encode.AudioWriter.write
def write(self, block):
    calls.append(self.path)
    if len(calls) == 2:
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(self, block)
encode.AudioWriter.write = write
"""


def test_separate_leaves_nothing_of_a_file_that_fails_half_way(song, tmp_path):
    """The disk fills after the first stem: neither stem stays, no temporary file, exit 3."""
    out = tmp_path / "out"
    code, lines = run_cli("separate", "--no-progress", "-o", str(out), song[0], inject=_SECOND_STEM_FULL)
    assert code == 3
    assert lines[0] == f"error: {song[0]}: writing its stems failed: No space left on device"
    assert lines[-1] == f"separated 0 of 1 files into {out}"
    assert not os.path.exists(out) or os.listdir(out) == []


@pytest.mark.fast
def test_a_writer_whose_encoder_cannot_start_leaves_no_temporary_file(tmp_path, monkeypatch):
    def no_ffmpeg(*args, **kwargs):
        raise FileNotFoundError("ffmpeg")

    monkeypatch.setattr("stembeam.model.encode.subprocess.Popen", no_ffmpeg)
    with pytest.raises(AudioEncodeError, match="ffmpeg is not installed: mp3 stems need it"):
        AudioWriter(str(tmp_path / "a" / "vocals.mp3"), codec="mp3")
    assert os.listdir(tmp_path) == []  # no .tmp-*, and not the folder it made


@pytest.mark.fast
def test_a_broken_pipe_to_ffmpeg_is_its_message(tmp_path):
    with pytest.raises(ValueError, match="bitrate"):
        AudioWriter(str(tmp_path / "x.mp3"), codec="mp3", bitrate="abc")
    writer = AudioWriter(str(tmp_path / "x.mp3"), channels=9, codec="mp3")  # 9 channels: libmp3lame refuses them
    with pytest.raises(AudioEncodeError, match="ffmpeg could not encode mp3"):
        for _ in range(50):
            writer.write(np.zeros((RATE, 9), np.float32))
        writer.close()
    assert os.listdir(tmp_path) == []


# --- 11. outputs never overwrite inputs; plain filename fields --------------------------------------

def test_an_output_onto_its_own_input_is_refused(song, tmp_path):
    target = tmp_path / "vocals.wav"
    shutil.copy(song[0], target)
    before = target.read_bytes()
    code, lines = run_cli("separate", "-o", str(tmp_path), "-f", "{instrument}.{codec}", str(target))
    assert code == 1 and "would write" in lines[0] and "over the input file" in lines[0] and lines[0].endswith("nothing written")
    assert target.read_bytes() == before


@pytest.mark.parametrize("fmt", ["{filename.__class__}", "{filename[0]}/{instrument}.{codec}", "{filename!r}/{instrument}", "{filename:>9}/{instrument}", "{0}"])
def test_filename_formats_take_plain_fields_only(song, tmp_path, fmt):
    code, lines = run_cli("separate", "-o", str(tmp_path / "out"), "-f", fmt, song[0])
    assert code == 1 and len(lines) == 1 and "is not one of the fields {filename} {foldername} {instrument} {codec}" in lines[0]
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.fast
def test_clashing_folders_suggest_foldername(tmp_path):
    from stembeam.pipeline.separate import FilenameCollisionError, planned_paths

    files = [str(tmp_path / song / "mixture.flac") for song in ("a", "b")]
    with pytest.raises(FilenameCollisionError, match=r"add \{foldername\}"):
        planned_paths(files, str(tmp_path / "out"), ("vocals",), "wav", "{filename}/{instrument}.{codec}")


# --- 9. the API's inputs ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def separator():
    import stembeam

    return stembeam.Separator("spleeter:2stems")


@pytest.fixture(scope="module")
def clip():
    from stembeam.model.decode import load_audio

    return load_audio(EXAMPLE, duration=3.0)


@pytest.mark.fast
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_integer_arrays_are_scaled_by_their_full_range(separator, clip, dtype):
    info = np.iinfo(dtype)
    half = (int(info.max) - int(info.min) + 1) // 2
    centre = int(info.min) + half
    pcm = np.clip(np.round(clip.astype(np.float64) * half) + centre, info.min, info.max).astype(dtype)
    as_float = ((pcm.astype(np.float64) - centre) / half).astype(np.float32)
    got = separator.separate(pcm)
    want = separator.separate(as_float)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
        assert np.max(np.abs(got[name])) < 2.0  # audio, not 1e9


@pytest.mark.fast
@pytest.mark.parametrize("waveform,rate,says", [
    (np.full((44100, 2), 1e18, np.float32), 44100, "beyond"),
    (np.full((44100, 2), np.nan, np.float32), 44100, "NaN or Inf"),
    (np.zeros((44100, 2), bool), 44100, "dtype bool"),
    (np.zeros((44100, 2), np.float32), 0, "sample_rate must be a whole number of Hz"),
    (np.zeros((44100, 2), np.float32), -1, "sample_rate must be a whole number of Hz"),
    (np.zeros((44100, 2), np.float32), float("nan"), "sample_rate must be a whole number of Hz"),
    (np.zeros((44100, 2), np.float32), None, "sample_rate must be a number of Hz"),
    (np.zeros((0, 2), np.float32), 44100, "with samples"),
])
def test_what_cannot_be_audio_is_one_value_error(separator, waveform, rate, says):
    with pytest.raises(ValueError, match=says):
        separator.separate(waveform, rate)


@pytest.mark.fast
def test_load_audio_refuses_a_rate_of_zero():
    from stembeam.model.decode import load_audio

    with pytest.raises(ValueError, match="sample_rate must be a whole number of Hz"):
        load_audio(EXAMPLE, sample_rate=0)


@pytest.mark.parametrize("codec", ["wav", "flac", "mp3", "ogg", "m4a", "wma"])
def test_every_codec_of_the_cli_works_in_separate_to_file(separator, song, tmp_path, codec):
    from stembeam.model.decode import load_audio
    from stembeam.model.encode import CODECS

    written = separator.separate_to_file(song[0], str(tmp_path), codec=codec)
    assert sorted(written) == ["accompaniment", "vocals"]
    for path in written.values():
        assert path.endswith("." + CODECS[codec][0])
        assert abs(load_audio(path).shape[0] - 5 * RATE) < 4096  # lossy codecs pad a little


@pytest.mark.fast
def test_an_unknown_codec_is_a_value_error(separator, song, tmp_path):
    with pytest.raises(ValueError, match="unknown codec 'aiff'; choose one of flac, m4a, mp3, ogg, wav, wma"):
        separator.separate_to_file(song[0], str(tmp_path), codec="aiff")
    assert os.listdir(tmp_path) == []


# --- 12. the local runner -------------------------------------------------------------------------

def test_local_jobs_run_on_the_fn_api_runner_never_prism(song, tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

    from stembeam.launch.local import make_pipeline
    from tests.conftest import run_corpus

    def no_prism(*args, **kwargs):
        raise AssertionError("PrismRunner was started (it downloads a binary at run time)")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    for argv in ([], ["--runner", "DirectRunner"], ["--runner=DirectRunner"]):
        assert isinstance(make_pipeline(PipelineOptions(argv)).runner, FnApiRunner)
    assert run_corpus(song[1], tmp_path / "out") == (1, 0, 0)


# --- the README's set-up on a user's own clone -----------------------------------------------------

class _Mirror:
    """A local HTTP server standing in for the release: serves a tarball whose weights are not
    the official ones (the sha256 check must refuse them)."""

    def __init__(self, folder):
        import http.server
        import tarfile

        os.makedirs(os.path.join(folder, "2stems"))
        with open(os.path.join(folder, "2stems", "model.data-00000-of-00001"), "wb") as handle:
            handle.write(b"not the official weights")
        with tarfile.open(os.path.join(folder, "2stems.tar.gz"), "w:gz") as tar:
            tar.add(os.path.join(folder, "2stems"), arcname=".")
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=folder, **k)  # noqa: E731
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.requests = []
        real = self.server.finish_request
        self.server.finish_request = lambda request, address: (self.requests.append(address), real(request, address))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.mark.parametrize("beside_shared", [True, False])
def test_make_model_uses_shared_only_where_it_exists_and_downloads_otherwise(tmp_path, beside_shared):
    mirror = _Mirror(str(tmp_path / "mirror"))
    env = {k: v for k, v in os.environ.items() if k not in ("STEMBEAM_NO_DOWNLOAD", "STEMBEAM_MODEL_PATH", "MAKEFLAGS", "MAKELEVEL")}
    env.update(STEMBEAM_CACHE=str(tmp_path / "cache"), STEMBEAM_RELEASE_URL=mirror.url)
    shared = SHARED if beside_shared else str(tmp_path / "no-shared")
    done = subprocess.run(["make", "-s", "model", f"SHARED={shared}"], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    mirror.server.shutdown()
    if beside_shared:
        assert done.returncode == 0 and done.stdout.strip() == os.path.join(SHARED, "models", "spleeter", "2stems")
        assert mirror.requests == []
    else:
        assert done.returncode != 0 and mirror.requests  # the download was attempted, not refused
        assert f"{mirror.url}/2stems.tar.gz (download failed: sha256 mismatch" in done.stderr
        assert "download disabled" not in done.stderr


# --- read in the code -------------------------------------------------------------------------------

def test_stemebams_own_warnings_show_in_quiet_mode(tmp_path):
    code = ("from stembeam.pipeline import console; console.setup()\n"
            "import warnings, stembeam.model.decode as d\n"
            "warnings.warn_explicit('own', UserWarning, 'x.py', 1, module='stembeam.model.decode')\n"
            "warnings.warn_explicit('theirs', UserWarning, 'y.py', 1, module='google.api_core')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "own" in done.stderr and "theirs" not in done.stderr


def test_in_process_jobs_do_not_keep_their_models(song, tmp_path):
    """Each job's model used to stay in a module registry for the life of the process; now only
    Beam's own keep-alive (apache_beam.utils.shared: the last shared object) holds the last job's."""
    import gc
    import weakref

    from stembeam.model import segment_graph
    from tests.conftest import run_corpus

    made = []
    real = segment_graph.SegmentSeparator.__init__

    def remember(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(weakref.ref(self))

    segment_graph.SegmentSeparator.__init__ = remember
    try:
        assert run_corpus(song[1], tmp_path / "one") == (1, 0, 0)
        first = list(made)
        assert run_corpus(song[1], tmp_path / "two") == (1, 0, 0)
    finally:
        segment_graph.SegmentSeparator.__init__ = real
    gc.collect()
    assert first
    assert [ref for ref in first if ref() is not None] == []
    assert len([ref for ref in made if ref() is not None]) <= 1


@pytest.mark.fast
def test_counts_without_metrics_use_the_models_segments(tmp_path):
    import datetime

    from stembeam.pipeline.summary import counts_from_metadata

    metadata = tmp_path / "metadata"
    metadata.mkdir()
    now = datetime.datetime.now(datetime.timezone.utc)
    import pyarrow as pa

    from stembeam.transforms.records import METADATA_SCHEMA, RowContext, StemFacts, metadata_row

    context = RowContext("m", "wav", "v")
    rows = [metadata_row(context, "t", "/x.wav", stem=StemFacts("vocals", "/o/v.wav", RATE, 2, 30.0, None, None))]
    pq.write_table(pa.Table.from_pylist(rows, schema=METADATA_SCHEMA), str(metadata / "tracks-00000-of-00001.parquet"))
    assert counts_from_metadata(str(tmp_path), now - datetime.timedelta(seconds=5), 512 * 1024)["chunks_inferred"] == 3
    assert counts_from_metadata(str(tmp_path), now - datetime.timedelta(seconds=5), 256 * 512)["chunks_inferred"] == 11


@pytest.mark.fast
def test_python_requires_the_version_extractall_filter_needs():
    with open(os.path.join(REPO, "setup.py")) as handle:
        assert 'python_requires=">=3.10.12,' in handle.read()


@pytest.mark.fast
def test_a_model_folder_without_weights_says_what_is_missing(tmp_path):
    from stembeam.model.resolve import ModelNotFoundError, resolve_model_dir

    folder = tmp_path / "4stems"
    folder.mkdir()
    for name in ("model.index", "model.meta"):
        shutil.copy(os.path.join(MODELS, "4stems", name), folder / name)
    for given in (str(folder), "4stems"):
        with pytest.raises(ModelNotFoundError, match="is incomplete: it has model.index but no weights"):
            cwd = os.getcwd()
            os.chdir(tmp_path)
            try:
                resolve_model_dir(given)
            finally:
                os.chdir(cwd)


def test_a_redo_in_another_codec_leaves_no_stems_of_the_old_one(song, tmp_path):
    from tests.conftest import run_corpus

    out = tmp_path / "out"
    assert run_corpus(song[1], out, "--codec", "flac") == (1, 0, 0)
    assert sorted(os.listdir(out / "stems" / "song")) == [".stembeam.json", "accompaniment.flac", "vocals.flac"]
    assert run_corpus(song[1], out) == (1, 0, 0)
    assert sorted(os.listdir(out / "stems" / "song")) == [".stembeam.json", "accompaniment.wav", "vocals.wav"]


def test_a_failed_pipeline_summary_names_the_rows_and_the_table(song, tmp_path):
    rows = [(song[0], "good")] + [(str(tmp_path / f"missing{i}.wav"), f"gone{i:02d}") for i in range(12)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    code, lines = run_cli("pipeline", "--manifest", manifest, "--output", str(tmp_path / "out"), "--progress_interval", "0")
    assert code == 3
    start = lines.index("failed rows (12):")
    named = lines[start + 1 : start + 11]
    assert len(named) == 10 and all(line.startswith("  gone") and "file not found" in line for line in named)
    assert lines[start + 11] == f"(2 more, all in {tmp_path / 'out'}/metadata/tracks-00000-of-00001.parquet: rows with status 'error')"
    code, _ = run_cli("pipeline", "--manifest", manifest, "--output", str(tmp_path / "out"), "--progress_interval", "0", "--allow_failures")
    assert code == 0

