"""Spleeter users' files and habits replayed through stembeam's command line: its training
config and dataset CSV (Spleeter's tests/test_train.py), `separate -p CONFIG.json`, its codecs
(wma included), its evaluate flags, and filename formats that would overwrite stems."""
import json
import os

import numpy as np
import pytest

from stembeam.pipeline.cli import main
from tests.conftest import AUDIO, EXAMPLE, needs_shared, read_wav

pytestmark = needs_shared
EXAMPLE_MONO = os.path.join(AUDIO, "spleeter-example", "audio_example_mono.mp3")
MUSDB_SAMPLE = os.path.join(AUDIO, "musdb18-sample", "Music Delta - 80s Rock.stem.mp4")

# Spleeter's TRAIN_CONFIG (tests/test_train.py); train_csv, model_dir, caches are set per run.
SPLEETER_TRAIN_CONFIG = {
    "mix_name": "mix",
    "instrument_list": ["vocals", "other"],
    "sample_rate": 44100,
    "frame_length": 4096,
    "frame_step": 1024,
    "T": 128,
    "F": 128,
    "n_channels": 2,
    "chunk_duration": 4,
    "n_chunks_per_song": 1,
    "separation_exponent": 2,
    "mask_extension": "zeros",
    "learning_rate": 1e-4,
    "batch_size": 2,
    "train_max_steps": 10,
    "throttle_secs": 20,
    "save_checkpoints_steps": 100,
    "save_summary_steps": 5,
    "random_seed": 0,
    "model": {"type": "unet.unet", "params": {"conv_activation": "ELU", "deconv_activation": "ELU"}},
}


def fake_training_dataset(path, n_channels, instruments=("vocals", "other"), n_songs=2, fs=44100, duration=6):
    """Spleeter's generate_fake_training_dataset: uniform noise stems of 6 s for 2 songs, and
    ``train/train.csv`` with ``mix_path``, ``<instrument>_path``, ``duration``, paths relative to ``path``."""
    import soundfile

    rng = np.random.RandomState(seed=0)
    rows = []
    for song in range(n_songs):
        folder = os.path.join(path, "train", f"song{song}")
        os.makedirs(folder, exist_ok=True)
        row = {}
        for name in list(instruments) + ["mix"]:
            soundfile.write(os.path.join(folder, f"{name}.wav"), rng.rand(duration * fs, n_channels) - 0.5, fs)
            row[f"{name}_path"] = os.path.join("train", f"song{song}", f"{name}.wav")
        rows.append({"mix_path": row.pop("mix_path"), **row, "duration": duration})
    csv_path = os.path.join(path, "train", "train.csv")
    with open(csv_path, "w") as handle:
        handle.write(",".join(rows[0]) + "\n")
        for row in rows:
            handle.write(",".join(str(v) for v in row.values()) + "\n")
    return csv_path


def _train_config(path, n_channels, **overrides):
    csv_path = fake_training_dataset(path, n_channels)
    config = dict(
        SPLEETER_TRAIN_CONFIG, n_channels=n_channels, train_csv=csv_path, validation_csv=csv_path,
        model_dir=os.path.join(path, f"model_{n_channels}"),
        training_cache=os.path.join(path, f"cache_{n_channels}", "training"),
        validation_cache=os.path.join(path, f"cache_{n_channels}", "validation"),
        **overrides,
    )
    config_path = os.path.join(path, f"config_{n_channels}.json")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    return config, config_path


@pytest.mark.parametrize("n_channels", [pytest.param(1, marks=pytest.mark.slow), 2])  # mono: `make test-slow` (30 s)
def test_spleeter_train_flow_then_separate_with_the_config(tmp_path, n_channels, decoded):
    """Spleeter's test_train: `train -p CONFIG.json -d DATASET_DIR` on 2 songs of random 6-s stems,
    T=F=128, ELU, 10 steps; Spleeter's checkpoint files with the official variable names; then
    `separate -p CONFIG.json` loads the config's model_dir and writes vocals and other."""
    import tensorflow as tf

    config, config_path = _train_config(str(tmp_path), n_channels)
    from tensorflow.python.framework import config as tf_config

    assert main(["train", "-p", config_path, "-d", str(tmp_path), "--verbose"]) == 0
    # The run's op determinism ends with it: left on, unseeded random ops run next in this
    # process (Spleeter's graph with its dropout) would fail.
    assert not tf_config.is_op_determinism_enabled()
    model_dir = config["model_dir"]
    assert os.path.exists(os.path.join(model_dir, "checkpoint"))
    assert os.path.exists(os.path.join(model_dir, "model.ckpt-10.index"))
    assert tf.train.latest_checkpoint(model_dir).endswith("model.ckpt-10")
    ours = dict(tf.train.list_variables(os.path.join(model_dir, "model.ckpt-10")))
    official = dict(tf.train.list_variables(os.path.join(AUDIO, "..", "models", "spleeter", "2stems", "model")))
    # Two U-nets as the official 2-stems model: the same variables; a mono model's first
    # convolutions take one channel (Spleeter's mask convolution keeps 2 filters).
    assert set(ours) == set(official)
    different = {name for name in ours if ours[name] != official[name]}
    assert different == ({"conv2d/kernel", "conv2d_7/kernel"} if n_channels == 1 else set())
    assert ours["conv2d_6/kernel"] == [4, 4, 1, 2]
    assert tf.train.load_checkpoint(os.path.join(model_dir, "model.ckpt-10")).get_tensor("global_step") == 10
    for name in ("training", "validation"):
        cache = os.path.join(str(tmp_path), f"cache_{n_channels}", name)
        assert json.load(open(os.path.join(cache, "stats.json")))[name if name == "validation" else "train"]["tracks"] == 2

    out = tmp_path / "separated"
    inputs = [EXAMPLE] + ([EXAMPLE_MONO] if n_channels == 1 else [])
    assert main(["separate", "--no-progress", "-p", config_path, "-o", str(out), *inputs]) == 0
    for path in inputs:
        name = os.path.splitext(os.path.basename(path))[0]
        assert sorted(os.listdir(out / name)) == ["other.wav", "vocals.wav"]
        vocals, other = (read_wav(str(out / name / f"{stem}.wav")) for stem in ("vocals", "other"))
        assert vocals.shape == other.shape == decoded(path).shape
        assert np.sqrt(np.mean((vocals - other) ** 2)) > 1e-3  # two different stems
        # Soft masks sum to one below F (and are zero above it: mask_extension zeros), so the
        # stems add up to the mixture's low band: far closer to it than to silence.
        assert np.sqrt(np.mean(vocals**2)) > 1e-4 and np.sqrt(np.mean(other**2)) > 1e-4


def test_static_filename_format_is_refused_before_any_work(tmp_path, capsys):
    """Spleeter's "I wanna be your lover" format puts both stems on one path: exit 1, the error
    names the format and the clashing path, and nothing is written (the model is not even loaded)."""
    out = tmp_path / "out"
    assert main(["separate", "--no-progress", "-o", str(out), "-f", "I wanna be your lover", EXAMPLE]) == 1
    error = capsys.readouterr().err
    assert "'I wanna be your lover'" in error
    assert f"{out / 'I wanna be your lover'} <- {EXAMPLE} (vocals), {EXAMPLE} (accompaniment)" in error
    assert not out.exists()
    # Two inputs whose stems share names under a format without {filename}: refused the same way.
    other = tmp_path / "elsewhere" / "audio_example.mp3"
    other.parent.mkdir()
    os.symlink(EXAMPLE, other)
    assert main(["separate", "--no-progress", "-o", str(out), EXAMPLE, str(other)]) == 1
    error = capsys.readouterr().err
    assert f"{out / 'audio_example' / 'vocals.wav'} <- {EXAMPLE} (vocals), {other} (vocals)" in error
    assert not out.exists()
    # {foldername} tells them apart: accepted.
    from stembeam.pipeline.separate import planned_paths

    assert len(planned_paths([EXAMPLE, str(other)], str(out), ("vocals", "accompaniment"), "wav", "{foldername}/{filename}/{instrument}.{codec}")) == 4


# flac, mp3, ogg and m4a are also checked by tests/test_audio.py at the writer (within 4096 samples).
@pytest.mark.parametrize("codec", ["wav", "wma"] + [pytest.param(c, marks=pytest.mark.slow) for c in ("flac", "mp3", "ogg", "m4a")])
def test_every_spleeter_codec_decodes_to_the_inputs_duration(tmp_path, codec, decoded):
    """Spleeter's codecs through `separate -c`: each stem decodes to the input's duration ± 0.1 s."""
    from stembeam.model.decode import load_audio

    out = tmp_path / "out"
    assert main(["separate", "--no-progress", "-o", str(out), "-c", codec, "-b", "128k", EXAMPLE]) == 0
    duration = decoded(EXAMPLE).shape[0] / 44100
    for stem in ("vocals", "accompaniment"):
        path = out / "audio_example" / f"{stem}.{codec}"
        back = load_audio(str(path))
        assert abs(back.shape[0] / 44100 - duration) <= 0.1, (codec, back.shape[0] / 44100, duration)
        assert np.sqrt(np.mean(back**2)) > 1e-3
    if codec == "wma":
        import subprocess

        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,bit_rate", "-of", "json", str(path)], capture_output=True, text=True)
        stream = json.loads(probe.stdout)["streams"][0]
        assert stream["codec_name"] == "wmav2"
        assert abs(int(stream["bit_rate"]) - 128000) < 16000


def _random_model(spleeter_config):
    from stembeam.model.config import from_spleeter
    from stembeam.model.segment_graph import SegmentSeparator
    from stembeam.model.unet import build_model

    import keras

    config = from_spleeter(spleeter_config)[0]
    keras.utils.set_random_seed(1)
    return config, SegmentSeparator(build_model(config), config)


def test_mask_extension_average_and_zeros(decoded):
    """Spleeter's mask_extension: ``zeros`` leaves nothing above F (the stems add up to the
    mixture's band below F*44100/4096 Hz); ``average`` extends each frame's mean mask, so the
    stems add up to the whole mixture. Both give the same stems below F."""
    from stembeam.model.separation import separate_waveform
    from stembeam.model import spectral

    waveform = decoded(EXAMPLE)[: 44100 * 4]
    base = dict(SPLEETER_TRAIN_CONFIG)
    stems = {}
    for extension in ("zeros", "average"):
        config, separator = _random_model(dict(base, mask_extension=extension))
        assert config.mask_extension == extension
        stems[extension] = separate_waveform(waveform, separator, batch_size=2)
    mix_stft = spectral.stft(waveform, 4096, 1024)
    for extension, expected_high in (("zeros", 0.0), ("average", 1.0)):
        total = spectral.stft(sum(stems[extension].values()), 4096, 1024)
        low = np.abs(total[:, 8:120] - mix_stft[:, 8:120]).mean() / np.abs(mix_stft[:, 8:120]).mean()
        high = np.abs(total[:, 200:]).mean() / np.abs(mix_stft[:, 200:]).mean()
        print(f"mask_extension {extension}: low band error {low:.2e}, high band energy ratio {high:.3f}")
        assert low < 1e-3
        assert abs(high - expected_high) < 0.02
    vocals = {e: spectral.stft(stems[e]["vocals"], 4096, 1024) for e in stems}
    # Below F the masks are the same; only the re-analysis window's leakage from above F differs.
    assert np.abs(vocals["zeros"][:, 8:120] - vocals["average"][:, 8:120]).mean() < 0.02 * np.abs(vocals["zeros"][:, 8:120]).mean()
    high = np.abs(vocals["average"][:, 200:]).mean()
    assert high > 10 * np.abs(vocals["zeros"][:, 200:]).mean()


def test_model_types_activations_and_ignored_keys(tmp_path, capsys):
    """unet.unet -> sigmoid U-nets, unet.softmax_unet -> softmax across stems, the activations
    named in model.params as Spleeter picks them; any other type is an error naming it, in
    every command that takes a config; keys with no meaning here are accepted and listed."""
    from stembeam.model.config import SPLEETER_IGNORED_KEYS, from_spleeter
    from stembeam.model.unet import build_model

    config, training = from_spleeter(SPLEETER_TRAIN_CONFIG)
    assert (config.conv_activation, config.deconv_activation, config.softmax_masks) == ("elu", "elu", False)
    assert (config.instruments, config.T, config.F, config.n_channels) == (("vocals", "other"), 128, 128, 2)
    assert (training.batch_size, training.train_max_steps, training.learning_rate, training.random_seed) == (2, 10, 1e-4, 0)
    assert set(training.ignored) == {"chunk_duration", "n_chunks_per_song", "throttle_secs", "save_summary_steps"} <= set(SPLEETER_IGNORED_KEYS)
    kinds = {type(layer).__name__ for layer in build_model(config).layers}
    assert "ELU" in kinds and "ReLU" not in kinds and "LeakyReLU" not in kinds

    softmax = dict(SPLEETER_TRAIN_CONFIG, model={"type": "unet.softmax_unet", "params": {"conv_activation": "ReLU"}})
    config = from_spleeter(softmax)[0]
    assert (config.conv_activation, config.deconv_activation, config.softmax_masks) == ("relu", "relu", True)
    model = build_model(config)
    assert "stem_softmax" in [layer.name for layer in model.layers]
    masks = model(np.random.default_rng(0).random((1, 128, 128, 2), np.float32), training=False).numpy()
    assert np.allclose(masks.sum(axis=-1), np.random.default_rng(0).random((1, 128, 128, 2), np.float32), atol=1e-5)
    leaky = from_spleeter(dict(SPLEETER_TRAIN_CONFIG, model={"type": "unet.unet", "params": {"deconv_activation": "LeakyReLU"}}))[0]
    assert (leaky.conv_activation, leaky.deconv_activation) == ("leaky_relu", "leaky_relu")

    blstm = tmp_path / "blstm.json"
    blstm.write_text(json.dumps(dict(SPLEETER_TRAIN_CONFIG, model={"type": "blstm.blstm", "params": {}}, model_dir=str(tmp_path / "m"))))
    capsys.readouterr()
    assert main(["train", "-p", str(blstm), "-d", str(tmp_path)]) == 1
    assert "model.type 'blstm.blstm' is not supported" in capsys.readouterr().err
    assert main(["prepare-dataset", "--model_config", str(blstm), "--dataset", str(tmp_path), "--output", str(tmp_path / "r")]) == 1
    assert "blstm.blstm" in capsys.readouterr().err
    assert main(["separate", "-p", str(blstm), "-o", str(tmp_path / "o"), EXAMPLE]) == 2
    assert "model.type 'blstm.blstm' is not supported" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mask_extension 'nearest'"):
        from_spleeter(dict(SPLEETER_TRAIN_CONFIG, mask_extension="nearest"))


def test_spleeter_dataset_csv_is_a_manifest(tmp_path):
    """Spleeter's CSV (mix_path, <instrument>_path, duration; paths relative to the -d folder)
    lists its tracks, named by their folders, with every instrument's file."""
    from stembeam.transforms.dataset import list_dataset

    csv_path = fake_training_dataset(str(tmp_path), 1, instruments=("vocals", "guitar"))
    tracks = list(list_dataset(csv_path, "all", root=str(tmp_path)))
    assert [t.track_id for t in tracks] == ["song0", "song1"]
    assert tracks[1].mixture.uri == os.path.join(str(tmp_path), "train", "song1", "mix.wav")
    assert dict(tracks[1].stems)["guitar"].uri == os.path.join(str(tmp_path), "train", "song1", "guitar.wav")
    assert sorted(dict(tracks[0].stems)) == ["guitar", "vocals"]
    assert all(os.path.exists(s.uri) for t in tracks for _, s in t.stems)


def test_evaluate_with_spleeter_flags(tmp_path, capsys):
    """`stembeam evaluate -p spleeter:2stems --mus_dir DIR -o OUT` (Spleeter's flags) on the
    7-s MUSDB sample in a test/ split folder: every stem scored, SDR as a number."""
    import csv

    mus_dir = tmp_path / "musdb" / "test"
    mus_dir.mkdir(parents=True)
    os.symlink(MUSDB_SAMPLE, mus_dir / os.path.basename(MUSDB_SAMPLE))
    out = tmp_path / "eval"
    assert main(["evaluate", "-p", "spleeter:2stems", "--mus_dir", str(tmp_path / "musdb"), "-o", str(out), "--verbose"]) == 0
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["stem"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"vocals", "accompaniment"}
    assert all(np.isfinite(float(rows[stem]["SDR"])) for stem in rows)
    assert float(rows["accompaniment"]["SDR"]) > 3.0
