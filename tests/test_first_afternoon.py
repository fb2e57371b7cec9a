"""A researcher's first afternoon (issue 30): each command that cannot do its job says so in one
line naming the input and exits non-zero, help texts list what a command takes, and the hints a
command prints run as printed."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests.conftest import CC0, CC0_SONGS, REPO, needs_shared, run_cli
from tests.test_training import TINY, _link_song

pytestmark = pytest.mark.cli  # `make test-cli` (CI runs it after `make test`)

RATE = 44100


def _tone(path, seconds=2.0, f0=220.0):
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * f0 * t)
    soundfile.write(str(path), np.stack([wave, wave], axis=1), RATE, subtype="PCM_16")


def _help(command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "stembeam", command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    return done.stdout


def test_features_on_a_flat_folder_analyses_each_file_as_a_mixture(tmp_path):
    """A flat folder of audio files: each file a mixture-only track named after the file."""
    import stembeam

    flat = tmp_path / "flat"
    flat.mkdir()
    _tone(flat / "low.wav", f0=110.0)
    _tone(flat / "high.wav", f0=440.0)
    (flat / "notes.txt").write_text("not audio, not listed")
    code, lines = run_cli("features", "--input", str(flat), "--output", str(tmp_path / "out"))
    assert code == 0, lines
    assert lines[-1].startswith("stembeam features: 2 tracks analysed, 0 reused, 0 failed")
    table = stembeam.read_output(str(tmp_path / "out"), to_pandas=True)
    assert sorted(table.track_id) == ["high", "low"] and set(table.stem) == {"mixture"} and set(table.status) == {"ok"}


@pytest.mark.parametrize("kind", ["missing", "empty", "no audio"])
def test_features_without_a_usable_track_is_one_error_line_and_exit_1(tmp_path, kind):
    folder = tmp_path / "input"
    if kind != "missing":
        folder.mkdir()
    if kind == "no audio":
        (folder / "readme.txt").write_text("no audio here")
    code, lines = run_cli("features", "--input", str(folder), "--output", str(tmp_path / "out"))
    assert code == 1 and len(lines) == 1, lines
    if kind == "no audio":
        assert lines[0].startswith(f"error: stembeam features: no usable tracks in {folder}: ") and "no tracks found" in lines[0]
    else:
        assert lines[0] == f"error: stembeam features: --input {folder}: no such folder, or an empty one"
    assert not (tmp_path / "out").exists()


@needs_shared
def test_evaluate_refuses_a_dataset_without_reference_stems_before_separating(tmp_path):
    manifest = tmp_path / "noref.csv"
    manifest.write_text("uri,track_id\n" + "".join(f"{os.path.join(CC0, song, 'mixture.flac')},{song}\n" for song in CC0_SONGS[:2]))
    code, lines = run_cli("evaluate", "--dataset", str(manifest), "--output", str(tmp_path / "out"))
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: stembeam evaluate: {manifest} has no reference stems") and "stembeam pipeline --manifest" in lines[0]
    assert not (tmp_path / "out").exists()  # nothing separated, nothing written


def test_help_lists_only_the_options_a_command_takes():
    evaluate, features, pipeline = (" ".join(_help(name).split()) for name in ("evaluate", "features", "pipeline"))
    assert "--dataset" in evaluate and "--manifest" not in evaluate
    assert "--input" in features and "flat folder of audio files" in features
    assert "--features " not in features and "--manifest" not in features
    assert "--manifest" in pipeline and "--features" in pipeline


@pytest.mark.parametrize("argv, line", [
    (["separate", "--mwf_block_frame", "64", "x.mp3"],
     "error: stembeam separate: unknown option --mwf_block_frame (did you mean --mwf_block_frames?)"),
    (["separate", "--ouput_path", "o", "x.mp3"], "error: stembeam separate: unknown option --ouput_path (did you mean --output_path?)"),
    (["train", "--data", "d", "--model-dir", "m", "--step", "2"], "error: stembeam train: unknown option --step (did you mean --steps?)"),
])
def test_an_unknown_option_is_one_line_with_a_did_you_mean_and_exit_1(argv, line):
    code, lines = run_cli(*argv)
    assert code == 1 and len(lines) == 1 and lines[0].startswith(line), lines


@needs_shared
def test_both_spellings_of_separates_options_give_the_same_stems(tmp_path):
    song = tmp_path / "song.wav"
    data, rate = soundfile.read(os.path.join(CC0, CC0_SONGS[0], "mixture.flac"), frames=3 * RATE)
    soundfile.write(str(song), data, rate)
    for spelling, out in (("--mwf_block_frames", "a"), ("--mwf-block-frames", "b")):
        code, lines = run_cli("separate", "--mwf", spelling, "64", "--output-path", str(tmp_path / out), str(song))
        assert code == 0, lines
    assert (tmp_path / "a" / "song" / "vocals.wav").read_bytes() == (tmp_path / "b" / "song" / "vocals.wav").read_bytes()


@needs_shared
def test_training_says_what_its_validation_loss_is_and_its_hint_runs_as_printed(tmp_path):
    """Records without validation examples: `train` says its validation loss is the training
    batches'; its closing hint, run as printed (FILE replaced), separates with the trained model
    into a folder of its own, never over separate's default folder."""
    from stembeam.pipeline.prepare import run as prepare

    dataset = tmp_path / "dataset"
    _link_song(dataset / CC0_SONGS[1], CC0_SONGS[1])
    records = tmp_path / "records"
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    assert prepare(["--dataset", str(dataset), "--output", str(records), "--model_config", str(tmp_path / "tiny.json"), "--shards", "1"]) == 0
    work = tmp_path / "work"
    work.mkdir()
    code, lines = run_cli("train", "--config", str(tmp_path / "tiny.json"), "--data", str(records), "--model-dir", "ft1", "--steps", "1",
                          "--checkpoint-every", "1", "--batch-size", "1", "--validation-batches", "1", cwd=str(work))
    assert code == 0, lines
    assert any(line.startswith(f"stembeam train: no validation records in {records}: the validation loss is the loss of the first 1 training batches")
               for line in lines), lines
    hint = lines[-1].split("(use it with: ", 1)[1].rstrip(")")
    assert hint == "stembeam separate -p ./ft1 -o separated_ft1 FILE..."
    song = work / "song.wav"
    _tone(song, seconds=1.0)
    code, lines = run_cli(*hint.split()[1:-1], str(song), cwd=str(work))
    assert code == 0 and lines == ["separated 1 of 1 files into separated_ft1"], lines
    assert sorted(os.listdir(work / "separated_ft1" / "song")) == ["accompaniment.wav", "vocals.wav"]
    assert not (work / "separated_audio").exists()
    shutil.rmtree(work / "separated_ft1")
