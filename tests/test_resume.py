"""Reruns never keep stale stems: the resume key, a redo killed half way, ids that cannot
collide, retry-safe writers, one job per output, the model export cache (issue 11)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stembeam.model.decode import load_audio
from stembeam.model.encode import write_audio
from tests.conftest import EXAMPLE, MODELS, REPO, needs_shared, run_corpus, stem_folder, write_manifest

pytestmark = needs_shared
OFFICIAL = os.path.join(MODELS, "2stems")


def _marker(output, track_id):
    with open(os.path.join(stem_folder(str(output), track_id), ".stembeam.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _copy_model(folder):
    shutil.copytree(OFFICIAL, folder)
    return str(folder)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """An official-format checkpoint folder of the 2-stems architecture with other weights
    (a fine-tuned model): the same file sizes as the official one, other bytes."""
    from stembeam.model.checkpoint import save_official_checkpoint
    from stembeam.model.load import load_model

    folder = tmp_path_factory.mktemp("retrained") / "2stems"
    _, model = load_model("spleeter:2stems")
    bias = next(w for w in model.weights if w.path.endswith("bias"))
    bias.assign(bias.numpy() + 0.05)
    os.makedirs(folder)
    save_official_checkpoint(model, os.path.join(str(folder), "model"))
    for name in os.listdir(OFFICIAL):
        if not os.path.exists(folder / name):
            shutil.copy(os.path.join(OFFICIAL, name), folder / name)
    assert sorted(os.listdir(folder)) == sorted(os.listdir(OFFICIAL))
    assert [os.path.getsize(folder / n) for n in sorted(os.listdir(folder)) if ".data-" in n] == [
        os.path.getsize(os.path.join(OFFICIAL, n)) for n in sorted(os.listdir(OFFICIAL)) if ".data-" in n
    ]
    return str(folder)


@pytest.fixture()
def short_songs(tmp_path):
    """Two 4-second excerpts of the example song as WAV files."""
    audio = load_audio(EXAMPLE)
    paths = []
    for k, start in enumerate((0, 5)):
        path = str(tmp_path / f"song{k}.wav")
        write_audio(path, audio[start * 44100 : (start + 4) * 44100])
        paths.append(path)
    return paths


def test_every_key_field_redoes_exactly_the_tracks_it_should(tmp_path, short_songs, retrained):
    """Model folder, weights retrained in place, bitrate, offset/duration and the source file
    each redo the tracks they concern; a rerun with nothing changed redoes none."""
    output = tmp_path / "out"
    folder = _copy_model(tmp_path / "model")
    rows = [(short_songs[0], "a"), (short_songs[1], "b")]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    base = ["--model_dir", folder, "--codec", "mp3", "--bitrate", "128k"]
    assert run_corpus(manifest, output, *base) == (2, 0, 0)
    assert run_corpus(manifest, output, *base) == (0, 2, 0)
    key = _marker(output, "a")["key"]
    assert key["bitrate"] == "128k" and key["source"]["size"] == os.path.getsize(short_songs[0]) and len(key["model_fingerprint"]) == 64

    base[-1] = "192k"
    assert run_corpus(manifest, output, *base) == (2, 0, 0), "bitrate"
    assert _marker(output, "b")["key"]["bitrate"] == "192k"

    write_manifest(tmp_path / "m.csv", [(short_songs[0], "a", 1.0, 2.0), (short_songs[1], "b", "", "")], ("uri", "track_id", "offset", "duration"))
    assert run_corpus(manifest, output, *base) == (1, 1, 0), "offset/duration"
    assert load_audio(os.path.join(stem_folder(str(output), "a"), "vocals.mp3")).shape[0] == pytest.approx(2 * 44100, abs=2000)

    audio = load_audio(short_songs[1])
    write_audio(short_songs[1], audio[::-1].copy())  # same size, other samples
    assert run_corpus(manifest, output, *base) == (1, 1, 0), "source file"

    assert run_corpus(manifest, output, *base[:1], retrained, *base[2:]) == (2, 0, 0), "model folder"
    assert run_corpus(manifest, output, *base) == (2, 0, 0), "back to the first folder"
    for name in os.listdir(retrained):  # retrained in place: same names and sizes, other weights
        shutil.copy(os.path.join(retrained, name), os.path.join(folder, name))
    assert run_corpus(manifest, output, *base) == (2, 0, 0), "weights in place"
    assert run_corpus(manifest, output, *base) == (0, 2, 0)


def test_the_model_export_is_remade_when_weights_change_in_place(tmp_path, retrained):
    """The export cache (``_model/``, what separate worker processes load) is stamped with the
    weights' content hash: same-size weights replaced in place are exported again."""
    import keras

    from stembeam.pipeline.prepared_model import ModelRequest, prepare_model

    folder = _copy_model(tmp_path / "model")
    output = str(tmp_path / "out")
    first = prepare_model(ModelRequest("spleeter:2stems", folder), output)
    first.finish()
    for name in os.listdir(retrained):
        shutil.copy(os.path.join(retrained, name), os.path.join(folder, name))
    second = prepare_model(ModelRequest("spleeter:2stems", folder), output)
    second.finish()
    assert first.keras_uri == second.keras_uri and first.fingerprint != second.fingerprint
    exported = keras.models.load_model(second.keras_uri, compile=False)
    from stembeam.model.load import load_model

    _, expected = load_model("spleeter:2stems", retrained)
    for got, want in zip(exported.weights, expected.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


KILL_AFTER_VOCALS = textwrap.dedent(
    """
    import os, sys
    import stembeam.model.encode as encode
    close = encode.AudioWriter.close
    def close_then_die(self):
        close(self)
        if os.path.basename(self.path).startswith("vocals."):
            os._exit(137)  # killed right after the redo replaced vocals
    encode.AudioWriter.close = close_then_die
    from stembeam.pipeline.corpus import run
    run(sys.argv[1:])
    """
)


def test_a_redo_killed_after_one_stem_is_redone_by_the_next_run(tmp_path, short_songs):
    """Soft run; an --mwf redo is killed right after it replaced vocals; the next default (soft)
    run must not trust the old marker: it separates the track again, and its stems equal the
    first soft run's byte for byte (no mwf vocals beside soft accompaniment)."""
    output = str(tmp_path / "out")
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], "a")])
    assert run_corpus(manifest, output) == (1, 0, 0)
    folder = stem_folder(output, "a")
    soft = {stem: open(os.path.join(folder, f"{stem}.wav"), "rb").read() for stem in ("vocals", "accompaniment")}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_VOCALS, "--manifest", manifest, "--output", output, "--mwf"],
        cwd=REPO, capture_output=True, text=True,
    )
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert open(os.path.join(folder, "vocals.wav"), "rb").read() != soft["vocals"]  # the redo got that far
    assert not os.path.exists(os.path.join(folder, ".stembeam.json"))
    assert run_corpus(manifest, output) == (1, 0, 0)
    for stem, data in soft.items():
        assert open(os.path.join(folder, f"{stem}.wav"), "rb").read() == data


def test_two_albums_with_the_same_file_names_share_one_output(tmp_path):
    """Two per-album manifests both list ``01.wav`` and write to one --output: each album keeps
    its own stems."""
    audio = load_audio(EXAMPLE)
    output = str(tmp_path / "out")
    for k, album in enumerate(("album1", "album2")):
        os.makedirs(tmp_path / album)
        write_audio(str(tmp_path / album / "01.wav"), audio[k * 44100 * 5 : (k * 5 + 3) * 44100])
        (tmp_path / album / "manifest.csv").write_text("uri\n01.wav\n")
    assert run_corpus(str(tmp_path / "album1" / "manifest.csv"), output) == (1, 0, 0)
    (first,) = os.listdir(os.path.join(output, "stems"))
    kept = open(os.path.join(output, "stems", first, "vocals.wav"), "rb").read()
    assert run_corpus(str(tmp_path / "album2" / "manifest.csv"), output) == (1, 0, 0)
    folders = sorted(os.listdir(os.path.join(output, "stems")))
    assert len(folders) == 2 and first in folders
    assert open(os.path.join(output, "stems", first, "vocals.wav"), "rb").read() == kept
    sources = {_marker_in(output, f)["rows"][0]["source_uri"] for f in folders}
    assert sources == {str(tmp_path / "album1" / "01.wav"), str(tmp_path / "album2" / "01.wav")}


def _marker_in(output, folder):
    with open(os.path.join(output, "stems", folder, ".stembeam.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_long_cjk_and_case_twin_ids_are_separated(tmp_path, short_songs):
    """A 100-character CJK id (300 bytes: over a file name's 255) and ids differing only in case."""
    ids = ["\u66f2" * 100, "Song", "song"]
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], ids[0]), (short_songs[1], ids[1]), (short_songs[0], ids[2])])
    output = str(tmp_path / "out")
    assert run_corpus(manifest, output) == (3, 0, 0)
    folders = os.listdir(os.path.join(output, "stems"))
    assert len({f.casefold() for f in folders}) == 3 and all(len(f.encode("utf-8")) <= 200 for f in folders)


def test_a_second_job_on_the_same_output_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, short_songs):
    """While a live job holds the output, another refuses to start (naming it) and touches
    nothing; the lock of a job that died is taken over."""
    import socket

    from stembeam.pipeline.output_lock import LOCK_FILE, OutputInUse

    output = tmp_path / "out"
    spool_file = output / "_work" / "spool" / "x" / "000000.npy"
    os.makedirs(spool_file.parent)
    spool_file.write_bytes(b"the running job's segment")
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], "a")])
    holder = {"job": "stembeam pipeline", "run_id": "abc123", "host": socket.gethostname(), "pid": os.getpid(), "started": 0, "heartbeat": 0}
    (output / LOCK_FILE).write_text(json.dumps(holder))
    with pytest.raises(OutputInUse, match=f"in use by stembeam pipeline \\(run abc123, pid {os.getpid()}"):
        run_corpus(manifest, output)
    assert spool_file.read_bytes() == b"the running job's segment" and not os.path.exists(output / "stems")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (output / LOCK_FILE).write_text(json.dumps({**holder, "pid": int(dead.stdout)}))
    assert run_corpus(manifest, output) == (1, 0, 0)
    assert not os.path.exists(output / LOCK_FILE) and not os.path.exists(output / "_work")


def test_metadata_is_replaced_only_when_the_new_table_is_written(tmp_path, short_songs):
    """A job that fails before writing keeps the previous metadata table."""
    from stembeam.transforms.write import METADATA_FILE

    output = tmp_path / "out"
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], "a")])
    assert run_corpus(manifest, output) == (1, 0, 0)
    table = output / "metadata" / METADATA_FILE
    before = table.read_bytes()
    (output / "metadata" / "tracks-00000-of-00004.parquet").write_bytes(b"an earlier layout's shard")
    with pytest.raises(SystemExit):
        run_corpus(manifest, output, "--mwf_block_frames", "0")  # refused after the model is loaded
    assert table.read_bytes() == before
    assert run_corpus(manifest, output) == (0, 1, 0)
    assert sorted(os.listdir(output / "metadata")) == [METADATA_FILE]


def test_a_spleeter_config_changed_in_place_redoes_the_tracks(tmp_path, short_songs):
    """`--model CONFIG.json` (Spleeter's format): its content shapes the stems (here the mask
    extension), so editing the file in place redoes the tracks."""
    config = {
        "model_dir": OFFICIAL, "instrument_list": ["vocals", "accompaniment"], "mix_name": "mix", "sample_rate": 44100,
        "frame_length": 4096, "frame_step": 1024, "T": 512, "F": 1024, "n_channels": 2, "separation_exponent": 2,
        "mask_extension": "zeros", "model": {"type": "unet.unet", "params": {}},
    }
    path = tmp_path / "2stems.json"
    path.write_text(json.dumps(config))
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], "a")])
    output = tmp_path / "out"
    assert run_corpus(manifest, output, "--model", str(path)) == (1, 0, 0)
    assert run_corpus(manifest, output, "--model", str(path)) == (0, 1, 0)
    path.write_text(json.dumps({**config, "mask_extension": "average"}))
    assert run_corpus(manifest, output, "--model", str(path)) == (1, 0, 0)


def test_the_summary_comes_from_the_metadata_when_the_runner_has_no_metrics(tmp_path, short_songs, monkeypatch, capsys):
    """Some runners report no metrics: the job still ends with its summary line, counted from the
    metadata table it wrote (this run's rows vs rows kept from markers)."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    from stembeam.pipeline.corpus import run

    def no_metrics(self):
        raise NotImplementedError("this runner reports no metrics")

    monkeypatch.setattr(fn_runner.RunnerResult, "metrics", no_metrics)
    manifest = write_manifest(tmp_path / "m.csv", [(short_songs[0], "a"), (short_songs[1], "b"), (str(tmp_path / "gone.wav"), "gone")])
    assert run(["--manifest", manifest, "--output", str(tmp_path / "out")]) == 3
    assert "2 tracks separated, 0 already done, 1 failed; 8 s of audio, 2 chunks inferred" in capsys.readouterr().err
    assert run(["--manifest", manifest, "--output", str(tmp_path / "out")]) == 3
    assert "0 tracks separated, 2 already done, 1 failed; 0 s of audio, 0 chunks inferred" in capsys.readouterr().err
