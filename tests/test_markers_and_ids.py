"""A marker vouches only for what is there: deleted or changed stems, ids that once shared a
folder, the checkpoint a folder's ``checkpoint`` file names; ``separate`` goes on past a file the
encoder refuses (issue 20, items 3, 11, 14, 15)."""
import json
import os
import shutil

import numpy as np
import pytest
import soundfile

from stembeam.model.decode import load_audio
from tests.conftest import EXAMPLE, MODELS, needs_shared, run_corpus, snr_db, stem_folder, write_manifest
from stembeam.transforms.records import Track

pytestmark = needs_shared
OFFICIAL = os.path.join(MODELS, "2stems")


COLUMNS = ("uri", "track_id", "duration")


def _rows(output):
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(str(output), "metadata")).to_pylist()


@pytest.fixture(scope="module")
def two_songs(tmp_path_factory):
    """Two different 3-s songs as wav (the example at 0 s and at 5 s)."""
    folder = tmp_path_factory.mktemp("songs")
    audio = load_audio(EXAMPLE)
    paths = []
    for name, start in (("a", 0), ("b", 5)):
        path = str(folder / f"{name}.wav")
        soundfile.write(path, audio[start * 44100 : (start + 3) * 44100], 44100, subtype="FLOAT")
        paths.append(path)
    return paths


def test_a_deleted_or_truncated_stem_redoes_its_track(tmp_path, two_songs):
    manifest = write_manifest(tmp_path / "m.csv", [(two_songs[0], "a", ""), (two_songs[1], "b", "")], COLUMNS)
    output = tmp_path / "out"
    assert run_corpus(manifest, output) == (2, 0, 0)
    vocals_a = os.path.join(stem_folder(str(output), "a"), "vocals.wav")
    accompaniment_b = os.path.join(stem_folder(str(output), "b"), "accompaniment.wav")
    original_a, original_b = open(vocals_a, "rb").read(), open(accompaniment_b, "rb").read()
    os.remove(vocals_a)
    with open(accompaniment_b, "r+b") as handle:
        handle.truncate(1000)
    assert run_corpus(manifest, output) == (2, 0, 0)
    assert open(vocals_a, "rb").read() == original_a and open(accompaniment_b, "rb").read() == original_b
    assert all(row["status"] == "ok" and os.path.getsize(row["stem_uri"]) > 1000 for row in _rows(output))
    # Untouched stems: skipped.
    assert run_corpus(manifest, output) == (0, 2, 0)


def test_an_id_that_looks_like_a_hashed_folder_gets_its_own_folder(tmp_path, two_songs):
    """``-rf`` is written to ``_-rf-836830ee``: a track whose id is that name must not share it."""
    hashed = Track("-rf", "").folder_name
    assert hashed == "_-rf-836830ee"
    assert Track(hashed, "").folder_name != hashed
    # A default id (file name + 8 hex digits of its uri) keeps its plain name.
    from stembeam.transforms.records import default_track_id

    assert Track(default_track_id("/x/song.wav"), "/x/song.wav").folder_name == default_track_id("/x/song.wav")
    manifest = write_manifest(tmp_path / "m.csv", [(two_songs[0], "-rf", ""), (two_songs[1], hashed, "")], COLUMNS)
    output = tmp_path / "out"
    assert run_corpus(manifest, output) == (2, 0, 0)
    by_id = {}
    for row in _rows(output):
        by_id.setdefault(row["track_id"], {})[row["stem"]] = row["stem_uri"]
    assert os.path.dirname(by_id["-rf"]["vocals"]) != os.path.dirname(by_id[hashed]["vocals"])
    for track_id, song in (("-rf", two_songs[0]), (hashed, two_songs[1])):
        from stembeam.model.separation import separate_waveform
        from stembeam.model.load import load_separator

        _, separator = load_separator("spleeter:2stems")
        expected = separate_waveform(load_audio(song), separator)["vocals"]
        assert snr_db(expected, load_audio(by_id[track_id]["vocals"])[: expected.shape[0]]) > 30


def test_a_marker_is_trusted_only_for_the_track_id_it_names(tmp_path, two_songs):
    """A row whose id changes to one whose folder holds another id's marker is separated again."""
    output = tmp_path / "out"
    assert run_corpus(write_manifest(tmp_path / "m1.csv", [(two_songs[0], "song", "")], COLUMNS), output) == (1, 0, 0)
    folder = stem_folder(str(output), "song")
    marker = json.load(open(os.path.join(folder, ".stembeam.json"), encoding="utf-8"))
    assert marker["track_id"] == "song"
    # Another id that lands in the same folder name cannot exist any more; simulate a marker left
    # by an older release whose folder rule let two ids share it.
    marker["track_id"] = "other"
    with open(os.path.join(folder, ".stembeam.json"), "w", encoding="utf-8") as handle:
        json.dump(marker, handle)
    assert run_corpus(write_manifest(tmp_path / "m2.csv", [(two_songs[0], "song", "")], COLUMNS), output) == (1, 0, 0)
    assert {row["track_id"] for row in _rows(output)} == {"song"}


def test_the_fingerprint_follows_the_checkpoint_the_folder_names(tmp_path, two_songs):
    """A training folder with two checkpoints: pointing ``checkpoint`` at the other one redoes."""
    from stembeam.model.checkpoint import save_official_checkpoint
    from stembeam.model.load import load_model, weights_fingerprint

    folder = tmp_path / "trained"
    os.makedirs(folder)
    _, model = load_model("spleeter:2stems")
    save_official_checkpoint(model, str(folder / "model.ckpt-100"), 100)
    bias = next(w for w in model.weights if w.path.endswith("bias"))
    bias.assign(bias.numpy() + 0.05)
    save_official_checkpoint(model, str(folder / "model.ckpt-200"), 200)

    def point_at(step):
        with open(folder / "checkpoint", "w") as handle:
            handle.write(f'model_checkpoint_path: "model.ckpt-{step}"\nall_model_checkpoint_paths: "model.ckpt-100"\n'
                         'all_model_checkpoint_paths: "model.ckpt-200"\n')

    point_at(200)
    latest = weights_fingerprint(str(folder))
    point_at(100)
    assert weights_fingerprint(str(folder)) != latest
    manifest = write_manifest(tmp_path / "m.csv", [(two_songs[0], "a", "")], COLUMNS)
    output = tmp_path / "out"
    assert run_corpus(manifest, output, "--model_dir", str(folder)) == (1, 0, 0)
    first = load_audio(os.path.join(stem_folder(str(output), "a"), "vocals.wav"))
    point_at(200)
    assert run_corpus(manifest, output, "--model_dir", str(folder)) == (1, 0, 0)
    assert snr_db(first, load_audio(os.path.join(stem_folder(str(output), "a"), "vocals.wav"))) < 80
    assert run_corpus(manifest, output, "--model_dir", str(folder)) == (0, 1, 0)
    # The official folder's fingerprint is what earlier releases wrote into markers.
    assert weights_fingerprint(OFFICIAL) == "89c74cd432bea876d9442b1ec617e07c687df4f094c406962a5f8c1e6320d761"


def test_separate_goes_on_past_a_file_the_encoder_refuses(tmp_path, two_songs, capsys):
    """A float wav near float32's limit separates into Inf/NaN, which no encoder takes: one error
    line for it, the next file is still written, exit code 1."""
    from stembeam.pipeline.cli import main

    huge = str(tmp_path / "huge.wav")
    soundfile.write(huge, np.full((44100, 2), 3e38, np.float32), 44100, subtype="FLOAT")
    good = str(tmp_path / "good.wav")
    shutil.copy(two_songs[0], good)
    out = tmp_path / "out"
    assert main(["separate", "-p", "spleeter:2stems", "-o", str(out), huge, good]) == 3  # ran; a file failed
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and huge in errors[0] and "samples reach 3e+38, beyond +-1000" in errors[0]
    assert sorted(os.listdir(out / "good")) == ["accompaniment.wav", "vocals.wav"]


def test_worker_processes_record_the_precision_that_ran(tmp_path, two_songs, monkeypatch):
    """--precision bfloat16 on worker processes of a CPU without bfloat16: they run float32, and
    the rows and the resume key say float32 (a float32 rerun keeps the track), not bfloat16."""
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n")
    monkeypatch.setenv("STEMBEAM_CPUINFO", str(fake))
    manifest = write_manifest(tmp_path / "m.csv", [(two_songs[0], "a", "")], COLUMNS)
    output = tmp_path / "out"
    workers = ["--direct_running_mode=multi_processing", "--direct_num_workers=1"]
    assert run_corpus(manifest, output, "--precision", "bfloat16", *workers) == (1, 0, 0)
    assert {row["precision"] for row in _rows(output)} == {"float32"}
    marker = json.load(open(os.path.join(stem_folder(str(output), "a"), ".stembeam.json"), encoding="utf-8"))
    assert "precision" not in marker["key"]
    assert run_corpus(manifest, output) == (0, 1, 0)
    assert run_corpus(manifest, output, "--precision", "bfloat16", *workers) == (0, 1, 0)
