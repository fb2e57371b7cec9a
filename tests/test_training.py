"""Training data, fine-tuning from the official weights, exact resume after a kill, export."""
import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from stembeam.model.config import SPLEETER_2STEMS, SPLEETER_4STEMS
from stembeam.model.training import TRAIN, VALIDATION, read_examples, segment_magnitudes
from stembeam.pipeline.prepare import run as prepare
from tests.conftest import AUDIO, CC0, CC0_SONGS, EXAMPLE, MODELS, REPO, needs_shared

pytestmark = needs_shared
MUSDB_SAMPLE = os.path.join(AUDIO, "musdb18-sample", "Music Delta - 80s Rock.stem.mp4")
# A small U-net (T = F = 64, few filters) for tests of the training machinery itself.
TINY = dataclasses.replace(SPLEETER_2STEMS, name="tiny:2stems", T=64, F=64, conv_n_filters=(4, 8, 8, 16, 16, 16))


def _link_song(folder, song, names=("mixture", "vocals", "drums", "bass", "other")):
    os.makedirs(folder, exist_ok=True)
    for name in names:
        os.symlink(os.path.join(CC0, song, f"{name}.flac"), os.path.join(folder, f"{name}.flac"))


def _direct(path, offset, config, stream=None, sources=None):
    """Magnitudes computed here from the audio: ``path`` (or the float64 sum of ``sources``) at ``offset``."""
    from stembeam.model.decode import load_audio

    if sources is not None:
        audio = np.sum([load_audio(p, stream=s).astype(np.float64) for p, s in sources], axis=0)
    else:
        audio = load_audio(path, stream=stream).astype(np.float64)
    cut = audio[offset : offset + config.segment_samples]
    cut = np.pad(cut, ((0, config.segment_samples - cut.shape[0]), (0, 0)))
    return segment_magnitudes(cut[None].astype(np.float32), config)[0]


def test_records_decode_to_the_spectrograms_of_the_audio_for_every_layout(tmp_path):
    """MUSDB folders with splits, a native .stem.mp4 and a manifest: every record decodes to
    exactly the magnitudes computed from the audio at its offset; test tracks validate."""
    config4 = SPLEETER_4STEMS
    folder = tmp_path / "musdb"
    _link_song(folder / "train" / "A", CC0_SONGS[0])
    _link_song(folder / "test" / "B", CC0_SONGS[1])
    _link_song(folder / "train" / "C-no-bass", CC0_SONGS[2], names=("mixture", "vocals", "drums", "other"))
    stems = tmp_path / "stems"
    stems.mkdir()
    os.symlink(MUSDB_SAMPLE, stems / "rock.stem.mp4")
    manifest = tmp_path / "m.csv"
    song = os.path.join(CC0, CC0_SONGS[2])
    manifest.write_text(f"uri,track_id,vocals,drums,bass,other\n{song}/mixture.flac,sodium,{song}/vocals.flac,{song}/drums.flac,{song}/bass.flac,{song}/other.flac\n")

    outputs = {}
    for name, dataset, config in (("folder", folder, config4), ("stem_mp4", stems, SPLEETER_2STEMS), ("manifest", manifest, config4)):
        outputs[name] = str(tmp_path / f"records-{name}")
        model_config = tmp_path / f"{name}.json"
        model_config.write_text(config.to_json())
        # The folder's C-no-bass track cannot be used: the run ends with 3 (some rows failed).
        assert prepare(["--dataset", str(dataset), "--output", outputs[name], "--model_config", str(model_config), "--shards", "2"]) == (3 if name == "folder" else 0)

    stats = json.loads(open(os.path.join(outputs["folder"], "stats.json")).read())
    assert stats["train"] == {"tracks": 1, "examples": 3, "audio_seconds": 30.0} and stats["validation"]["tracks"] == 1
    assert stats["failed"][0]["track_id"] == "C-no-bass" and "no bass stem" in stats["failed"][0]["reason"]
    checked = 0
    for split, track, names in ((TRAIN, "A", CC0_SONGS[0]), (VALIDATION, "B", CC0_SONGS[1])):
        examples = list(read_examples(os.path.join(outputs["folder"], f"{split}-*.tfrecord"), config4))
        assert {e["track_id"] for e in examples} == {track} and len(examples) == 3
        for example in examples:
            np.testing.assert_array_equal(example["mix"], _direct(os.path.join(CC0, names, "mixture.flac"), example["offset"], config4))
            for stem in config4.instruments:
                np.testing.assert_array_equal(example[stem], _direct(os.path.join(CC0, names, f"{stem}.flac"), example["offset"], config4))
            checked += 1
    # 2 stems from the .stem.mp4: stream 0 is the mixture, accompaniment = drums + bass + other (streams 1-3).
    (rock,) = read_examples(os.path.join(outputs["stem_mp4"], f"{TRAIN}-*.tfrecord"), SPLEETER_2STEMS)
    assert rock["track_id"] == "rock" and rock["offset"] == 0  # 7 s: one zero-padded segment
    np.testing.assert_array_equal(rock["mix"], _direct(MUSDB_SAMPLE, 0, SPLEETER_2STEMS, stream=0))
    np.testing.assert_array_equal(rock["vocals"], _direct(MUSDB_SAMPLE, 0, SPLEETER_2STEMS, stream=4))
    np.testing.assert_array_equal(rock["accompaniment"], _direct(None, 0, SPLEETER_2STEMS, sources=[(MUSDB_SAMPLE, k) for k in (1, 2, 3)]))
    sodium = list(read_examples(os.path.join(outputs["manifest"], f"{TRAIN}-*.tfrecord"), config4))
    assert len(sodium) == 3 and {e["track_id"] for e in sodium} == {"sodium"}
    np.testing.assert_array_equal(sodium[0]["bass"], _direct(os.path.join(song, "bass.flac"), sodium[0]["offset"], config4))
    assert checked == 6


@pytest.fixture(scope="module")
def hydrogen_records(tmp_path_factory):
    """2-stems records of one cc0 song (3 examples)."""
    tmp = tmp_path_factory.mktemp("hydrogen")
    _link_song(tmp / "dataset" / CC0_SONGS[0], CC0_SONGS[0])
    output = str(tmp / "records")
    assert prepare(["--dataset", str(tmp / "dataset"), "--output", output, "--shards", "1"]) == 0
    return output


def test_fine_tuning_starts_at_the_official_models_loss(hydrogen_records, tmp_path, official_graph):
    """With the official 2-stems weights the first validation loss equals the L1 loss of
    Spleeter's own graph (its source spectrograms) against the same records, batch for batch."""
    from stembeam.model.training import Trainer, TrainerSettings

    trainer = Trainer(SPLEETER_2STEMS, hydrogen_records, str(tmp_path / "model"), TrainerSettings(batch_size=2, freeze_batch_norm=True))
    assert trainer.restore_or_initialize("spleeter:2stems") == "initialised from spleeter:2stems"
    history = trainer.train(0, validation_batches=2)
    ours = history[0]["validation_loss"]

    from stembeam.model.decode import load_audio

    mixture = load_audio(os.path.join(CC0, CC0_SONGS[0], "mixture.flac"))
    examples = list(read_examples(os.path.join(hydrogen_records, f"{TRAIN}-*.tfrecord"), SPLEETER_2STEMS))
    batch_losses = []
    for first in range(0, len(examples), 2):
        batch = examples[first : first + 2]
        errors = {stem: [] for stem in SPLEETER_2STEMS.instruments}
        for example in batch:
            span = mixture[example["offset"] : example["offset"] + SPLEETER_2STEMS.segment_samples]
            sources, _ = official_graph.wiener_inputs(span)
            for k, stem in enumerate(SPLEETER_2STEMS.instruments):
                errors[stem].append(np.abs(sources[: SPLEETER_2STEMS.T, ..., k].astype(np.float64) - example[stem]))
        batch_losses.append(sum(np.mean(errors[stem]) for stem in errors))
    official = float(np.mean(batch_losses))
    print(f"first validation loss {ours:.6f}; official graph on the same batches {official:.6f}")
    assert ours == pytest.approx(official, rel=1e-4)


def _train_cli(records, model_dir, steps, *extra):
    return [sys.executable, "-m", "stembeam.pipeline.train", "--config", str(records / "tiny.json"), "--data", str(records), "--model-dir", str(model_dir),
            "--steps", str(steps), "--checkpoint-every", "2", "--batch-size", "2", "--validation-batches", "1", "--keep-checkpoints", "0", *extra]


def _checkpoint_values(model_dir, step):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints", f"ckpt-{step}"))
    names = [n for n, dtype in reader.get_variable_to_dtype_map().items() if not n.startswith("save_counter")]
    return {n: reader.get_tensor(n) for n in names}


@pytest.mark.slow  # about 50 s: `make test-slow`; resuming by step stays in `make test`
def test_killed_training_resumes_exactly(tmp_path):
    """SIGKILL during training, run again: it resumes from the last checkpoint, whose step and
    weights (and optimizer, input position and dropout state) equal an uninterrupted run's, and
    ends with identical weights."""
    dataset = tmp_path / "dataset"
    _link_song(dataset / CC0_SONGS[1], CC0_SONGS[1])
    records = tmp_path / "records"
    (tmp_path / "tiny.json").write_text(TINY.to_json())
    assert prepare(["--dataset", str(dataset), "--output", str(records), "--model_config", str(tmp_path / "tiny.json"), "--shards", "1"]) == 0
    (records / "tiny.json").write_text(TINY.to_json())
    steps = 24
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The uninterrupted run goes alongside the one that gets killed.
    whole = subprocess.Popen(_train_cli(records, tmp_path / "whole", steps), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = subprocess.Popen(_train_cli(records, tmp_path / "killed", steps), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    def saved_step():
        # The `checkpoint` state file is written after the checkpoint's own files: read the step
        # from it, as the resumed run will.
        last = tf.train.latest_checkpoint(str(tmp_path / "killed" / "checkpoints"))
        return int(last.rsplit("-", 1)[1]) if last else 0

    while saved_step() < 4 and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    last = tf.train.latest_checkpoint(str(tmp_path / "killed" / "checkpoints"))
    resumed_at = int(last.rsplit("-", 1)[1])
    assert 4 <= resumed_at < steps, resumed_at  # killed mid-run
    assert whole.wait() == 0
    resumed = subprocess.run(_train_cli(records, tmp_path / "killed", steps), check=True, cwd=REPO, env=env, capture_output=True, text=True)
    assert f"resumed at step {resumed_at}" in resumed.stderr
    for step in (resumed_at, steps):
        whole, again = _checkpoint_values(tmp_path / "whole", step), _checkpoint_values(tmp_path / "killed", step)
        assert whole.keys() == again.keys() and any("optimizer" in n for n in whole)
        for name in whole:
            np.testing.assert_array_equal(whole[name], again[name], err_msg=f"{name} at step {step}")


@pytest.mark.slow  # about 60 s: `make test-slow`
def test_four_stems_from_scratch_exports_and_separates(tmp_path):
    """A 4-stems model trained briefly from scratch exports a name-based checkpoint with exactly
    the official 4-stems variables, and `stembeam separate -p DIR` writes its four stems."""
    from stembeam.model.checkpoint import checkpoint_prefix, checkpoint_variables

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    os.symlink(MUSDB_SAMPLE, dataset / "rock.stem.mp4")  # 7 s: one example
    records = tmp_path / "records"
    assert prepare(["--dataset", str(dataset), "--output", str(records), "--model_config", "spleeter:4stems", "--shards", "1", "--augment"]) == 0
    model_dir = tmp_path / "model"
    subprocess.run(
        [sys.executable, "-m", "stembeam.pipeline.train", "--config", "spleeter:4stems", "--data", str(records), "--model-dir", str(model_dir),
         "--steps", "1", "--batch-size", "1", "--validation-batches", "1"],
        check=True, cwd=REPO, capture_output=True,
    )
    official = checkpoint_variables(os.path.join(MODELS, "4stems", "model"))
    ours = checkpoint_variables(checkpoint_prefix(str(model_dir)))
    assert ours == official  # names and shapes, global_step included
    out = tmp_path / "separated"
    subprocess.run([sys.executable, "-m", "stembeam.pipeline.cli", "separate", "-p", str(model_dir), "-o", str(out), "--no-progress", EXAMPLE], check=True, cwd=REPO, capture_output=True)
    written = sorted(os.listdir(out / "audio_example"))
    assert written == ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]
    from stembeam.model.decode import load_audio
    from tests.conftest import read_wav

    assert all(read_wav(str(out / "audio_example" / name)).shape == load_audio(EXAMPLE).shape for name in written)


@pytest.mark.slow
def test_fine_tuning_on_one_song_lowers_its_loss_and_raises_its_vocals_sdr(tmp_path, capsys):
    """Fine-tune the official 2-stems model on one cc0 song (Adam 1e-4, batch 2, batch norm
    frozen): its loss falls and its vocals SDR (the evaluation job, soft masks) rises."""
    from stembeam.pipeline.evaluation import run as evaluate

    dataset = tmp_path / "dataset"
    _link_song(dataset / CC0_SONGS[0], CC0_SONGS[0])
    records, model_dir = tmp_path / "records", tmp_path / "model"
    assert prepare(["--dataset", str(dataset), "--output", str(records), "--shards", "1", "--repeat", "2"]) == 0
    trained = subprocess.run(
        [sys.executable, "-m", "stembeam.pipeline.train", "--config", "spleeter:2stems", "--data", str(records), "--model-dir", str(model_dir),
         "--init", "spleeter:2stems", "--steps", "24", "--batch-size", "2", "--checkpoint-every", "6", "--validation-batches", "3"],
        check=True, cwd=REPO, capture_output=True, text=True,
    )
    curve = [json.loads(line) for line in trained.stdout.splitlines() if line.startswith("{")]

    def vocals_sdr(model, output):
        assert evaluate(["--dataset", str(dataset), "--model", model, "--output", str(output)]) == 0
        rows = {r["stem"]: r for r in csv.DictReader(open(output / "summary.csv"))}
        return float(rows["vocals"]["SDR"]), float(rows["accompaniment"]["SDR"])

    before, after = vocals_sdr("spleeter:2stems", tmp_path / "before"), vocals_sdr(str(model_dir), tmp_path / "after")
    with capsys.disabled():
        print("\nfine-tuning on", CC0_SONGS[0])
        for entry in curve:
            print(f"  step {entry['step']:3d}  train loss {entry['train_loss'] if entry['train_loss'] is None else round(entry['train_loss'], 4)}"
                  f"  validation loss {entry['validation_loss']:.4f}")
        first_train = curve[1]["train_loss"]
        print(f"  train loss {first_train:.4f} -> {curve[-1]['train_loss']:.4f} ({1 - curve[-1]['train_loss'] / first_train:.0%} lower); "
              f"validation {curve[0]['validation_loss']:.4f} -> {curve[-1]['validation_loss']:.4f} ({1 - curve[-1]['validation_loss'] / curve[0]['validation_loss']:.0%} lower)")
        print(f"  SDR vocals {before[0]:.2f} -> {after[0]:.2f} dB, accompaniment {before[1]:.2f} -> {after[1]:.2f} dB")
    assert curve[-1]["validation_loss"] < 0.9 * curve[0]["validation_loss"]
    assert curve[-1]["train_loss"] < 0.9 * curve[1]["train_loss"]
    assert after[0] > before[0] + 0.3


def _random_records(folder, config, count, seed=0):
    """``count`` examples of random magnitudes with the config's real shapes in one TFRecord file."""
    from stembeam.model.training import serialize_example

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    shape = (config.T, config.F, config.n_channels)
    with tf.io.TFRecordWriter(os.path.join(folder, f"{TRAIN}-00000-of-00001.tfrecord")) as writer:
        for k in range(count):
            mix = rng.random(shape, dtype=np.float32)
            targets = {name: mix * rng.random(shape, dtype=np.float32) for name in config.instruments}
            writer.write(serialize_example(mix, targets, f"t{k}", k))


def test_a_checkpoint_holds_the_model_and_optimizer_and_no_examples(tmp_path):
    """With the real T=512, F=1024 shapes (4.2 MB per magnitude tensor), a checkpoint weighs what
    the weights and Adam's moments weigh: no example of the input pipeline is stored in it (a
    shuffle buffer of parsed examples made every checkpoint about 3.2 GB for 2 stems)."""
    from stembeam.model.training import KEEP_CHECKPOINTS, Trainer, TrainerSettings

    _random_records(tmp_path / "records", SPLEETER_2STEMS, 3)
    trainer = Trainer(SPLEETER_2STEMS, str(tmp_path / "records"), str(tmp_path / "model"), TrainerSettings(batch_size=1))
    trainer.restore_or_initialize()
    trainer.train(1, checkpoint_every=1, validation_batches=1)
    state = sum(v.numpy().nbytes for v in trainer.model.weights) + sum(v.numpy().nbytes for v in trainer.optimizer.variables)
    folder = tmp_path / "model" / "checkpoints"
    size = sum(os.path.getsize(folder / name) for name in os.listdir(folder) if name.startswith("ckpt-1."))
    print(f"checkpoint: {size / 1e6:.1f} MB; model + optimizer variables {state / 1e6:.1f} MB; one example {3 * 4 * 512 * 1024 * 2 / 1e6:.1f} MB")
    assert state <= size <= state + 1_000_000
    reader = tf.train.load_checkpoint(str(folder / "ckpt-1"))
    assert not [n for n, dtype in reader.get_variable_to_dtype_map().items() if dtype == tf.variant]
    assert trainer._manager._max_to_keep == KEEP_CHECKPOINTS == 3


def test_only_the_last_checkpoints_are_kept_and_the_input_resumes_by_step(tmp_path):
    """Default: the last 3 checkpoints. The input's position is the step: the batches a resumed
    trainer draws equal those of one that never stopped."""
    from stembeam.model.training import Trainer, TrainerSettings, record_index, training_batches

    _random_records(tmp_path / "records", TINY, 5)
    trainer = Trainer(TINY, str(tmp_path / "records"), str(tmp_path / "model"), TrainerSettings(batch_size=2))
    trainer.restore_or_initialize()
    trainer.train(6, checkpoint_every=1, validation_batches=1)
    kept = sorted(n for n in os.listdir(tmp_path / "model" / "checkpoints") if n.endswith(".index"))
    assert kept == ["ckpt-4.index", "ckpt-5.index", "ckpt-6.index"]
    index = record_index([str(tmp_path / "records" / f"{TRAIN}-00000-of-00001.tfrecord")])
    assert len(index) == 5
    straight = [m.numpy() for m, _ in training_batches(index, TINY, 2, seed=7).take(7)]
    resumed = [m.numpy() for m, _ in training_batches(index, TINY, 2, seed=7, start_batch=4).take(3)]
    for a, b in zip(straight[4:], resumed):
        np.testing.assert_array_equal(a, b)
    # Each epoch is a permutation of all the records (5 records, batches of 2: 10 examples = 2 epochs).
    records = sorted(float(e["mix"][0, 0, 0]) for e in read_examples(str(tmp_path / "records" / "*.tfrecord"), TINY))
    drawn = [float(m[0, 0, 0]) for batch in straight[:5] for m in batch]
    assert sorted(drawn[:5]) == records == sorted(drawn[5:]) and drawn[:5] != drawn[5:]
