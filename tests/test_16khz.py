"""Spleeter's 16 kHz models: ``spleeter:2stems-16kHz`` (4 and 5 stems too) are the base model's
weights with F = 1536 bins through the U-nets instead of 1024 (Spleeter's configs/*-16kHz.json),
under every command and the Python API."""
import dataclasses
import json
import os

import numpy as np
import pytest

from stembeam.model.decode import load_audio
from stembeam.model.encode import write_audio
from stembeam.model.config import from_spleeter, get_config
from stembeam.pipeline.cli import main
from tests.band_energy import band_energy, high_band_share, rounding_energy
from tests.conftest import EXAMPLE, MODELS, needs_shared, read_wav, run_corpus, stem_folder, write_manifest

pytestmark = needs_shared
OFFICIAL = os.path.join(MODELS, "2stems")
STEMS = ("vocals", "accompaniment")
SECONDS = 10

# Spleeter's own configs/<base>-16kHz.json (spleeter/resources/), model_dir set per test.
SPLEETER_16KHZ = {
    "train_csv": "path/to/train.csv", "validation_csv": "path/to/test.csv", "model_dir": "2stems", "mix_name": "mix",
    "instrument_list": ["vocals", "accompaniment"], "sample_rate": 44100, "frame_length": 4096, "frame_step": 1024,
    "T": 512, "F": 1536, "n_channels": 2, "separation_exponent": 2, "mask_extension": "zeros", "learning_rate": 1e-4,
    "batch_size": 4, "training_cache": "training_cache", "validation_cache": "validation_cache", "train_max_steps": 1000000,
    "throttle_secs": 300, "random_seed": 0, "save_checkpoints_steps": 150, "save_summary_steps": 5,
    "model": {"type": "unet.unet", "params": {}},
}
SPLEETER_16KHZ_OTHERS = {
    "4stems-16kHz": dict(
        SPLEETER_16KHZ, model_dir="4stems", instrument_list=["vocals", "drums", "bass", "other"], train_max_steps=1500000,
        throttle_secs=600, random_seed=3, save_checkpoints_steps=300,
        model={"type": "unet.unet", "params": {"conv_activation": "ELU", "deconv_activation": "ELU"}},
    ),
    "5stems-16kHz": dict(
        SPLEETER_16KHZ, model_dir="5stems", instrument_list=["vocals", "piano", "drums", "bass", "other"], train_max_steps=2500000,
        throttle_secs=600, random_seed=8, save_checkpoints_steps=300,
        model={"type": "unet.softmax_unet", "params": {"conv_activation": "ELU", "deconv_activation": "ELU"}},
    ),
}


@pytest.fixture(scope="module")
def separated(tmp_path_factory):
    """`stembeam separate -d 10` of the example with spleeter:2stems-16kHz, with Spleeter's own
    2stems-16kHz.json (model_dir: the official 2stems folder) and with spleeter:2stems:
    ``{label: {stem: wav bytes}}``."""
    tmp = tmp_path_factory.mktemp("separate16k")
    config_path = tmp / "2stems-16kHz.json"
    config_path.write_text(json.dumps(dict(SPLEETER_16KHZ, model_dir=OFFICIAL)))
    out = {}
    for label, model in (("name", "spleeter:2stems-16kHz"), ("json", str(config_path)), ("base", "spleeter:2stems")):
        folder = tmp / label
        assert main(["separate", "--no-progress", "-p", model, "-o", str(folder), "-d", str(SECONDS), EXAMPLE]) == 0
        out[label] = {stem: (folder / "audio_example" / f"{stem}.wav").read_bytes() for stem in STEMS}
    return out


def test_the_name_gives_the_stems_of_spleeters_16khz_config(separated):
    """`-p spleeter:2stems-16kHz` writes the very bytes of `-p 2stems-16kHz.json` (Spleeter's file,
    F 1536, the official 2-stems folder), which are not those of spleeter:2stems."""
    for stem in STEMS:
        assert len(separated["name"][stem]) == 44 + SECONDS * 44100 * 2 * 2
        assert separated["name"][stem] == separated["json"][stem], stem
        assert separated["name"][stem] != separated["base"][stem], stem


def test_16khz_stems_have_the_band_above_11khz_and_none_above_16khz(tmp_path, separated):
    """Share of each stem's energy above 11025 Hz (bins > 1024): about zero with spleeter:2stems
    (its masks are zero there), a real share with spleeter:2stems-16kHz. Past the edge of the
    masks (bin 1024, or 1536 at 16.5 kHz: Spleeter's mask_extension "zeros") and the analysis
    window's leakage there (3 bins, 32 Hz) a stem holds 16-bit rounding only, plus the
    distortion of samples clipped at full scale where it has some."""
    shares = {}
    for label in ("base", "name"):
        for stem in STEMS:
            path = tmp_path / f"{label}-{stem}.wav"
            path.write_bytes(separated[label][stem])
            signal = read_wav(str(path))
            shares[label, stem] = high_band_share(signal)
            edge = 1028 if label == "base" else 1540
            ratio = band_energy(signal, edge) / rounding_energy(signal, edge)
            clipped = int(np.sum(np.abs(signal) >= 32767 / 32768))
            print(f"{label} {stem}: {100 * shares[label, stem]:.5f} % of the energy above 11025 Hz; from bin {edge} on "
                  f"{ratio:.2f} x the energy of 16-bit rounding ({clipped} samples at full scale)")
            if clipped:
                assert high_band_share(signal, edge) < 1e-7, (label, stem)
            else:
                assert 0.5 < ratio < 2.0, (label, stem, ratio)
    assert {stem for _, stem in shares} == set(STEMS)
    for stem in STEMS:
        assert shares["base", stem] < 1e-6
        assert shares["name", stem] > 1e-3
    mixture = load_audio(EXAMPLE)[: SECONDS * 44100]
    print(f"mixture: {100 * high_band_share(mixture):.4f} % above 11025 Hz")


def test_spleeters_16khz_configs_are_the_names(tmp_path):
    """Spleeter's 2/4/5stems-16kHz.json map to the configs of the names (only the name differs):
    the base instruments, activations, masks, F 1536, mask_extension zeros."""
    for base, data in [("2stems", SPLEETER_16KHZ)] + [(name.split("-")[0], data) for name, data in SPLEETER_16KHZ_OTHERS.items()]:
        wide, plain = get_config(f"spleeter:{base}-16kHz"), get_config(base)
        assert wide.name == f"spleeter:{base}-16kHz" and wide.F == 1536 and wide.mask_extension == "zeros"
        assert dataclasses.replace(wide, name=plain.name, F=plain.F) == plain
        assert get_config(f"{base}-16kHz") == wide
        config, training = from_spleeter(data)
        assert dataclasses.replace(config, name=wide.name) == wide
        assert training.model_dir == base


def test_the_names_resolve_to_the_base_models_folder_and_variables(tmp_path, monkeypatch):
    """spleeter:4stems-16kHz and 5stems-16kHz have F 1536 and the base instruments; their U-nets
    have exactly the official checkpoint's variables; they are looked up (folder, cache, download)
    as 4stems / 5stems, and an unknown suffix is an error that lists the names."""
    from stembeam.model import checkpoint, resolve
    from stembeam.model.unet import build_model

    assert get_config("spleeter:4stems-16kHz").instruments == ("vocals", "drums", "bass", "other")
    assert get_config("spleeter:5stems-16kHz").instruments == ("vocals", "piano", "drums", "bass", "other")
    assert get_config("spleeter:5stems-16kHz").softmax_masks and not get_config("spleeter:4stems-16kHz").softmax_masks
    for stems in (4, 5):
        config = get_config(f"spleeter:{stems}stems-16kHz")
        assert config.F == 1536
        official = checkpoint.checkpoint_variables(os.path.join(MODELS, f"{stems}stems", "model"))
        assert checkpoint.keras_variables(build_model(config)) == official
    assert resolve.resolve_model_dir("spleeter:2stems-16kHz") == resolve.resolve_model_dir("2stems-16kHz") == OFFICIAL

    # 4stems/ here has no weights: the error names the 4stems folders and release, not 4stems-16kHz's.
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(resolve.ModelNotFoundError) as info:
        resolve.resolve_model_dir("spleeter:4stems-16kHz", download=False)
    message = str(info.value)
    assert os.path.join(MODELS, "4stems") + " ($STEMBEAM_MODEL_PATH" in message  # with ": incomplete: ..." where the folder lacks its weights
    assert str(tmp_path / "cache" / "4stems") + " (cache)" in message
    assert "releases/download/v1.4.0/4stems.tar.gz" in message and "16kHz/" not in message and "16kHz.tar" not in message

    for unknown in ("spleeter:2stems-22kHz", "spleeter:2stems-16khz", "2stems-8kHz"):
        with pytest.raises(ValueError, match=f"unknown model configuration '{unknown}'; known: .*spleeter:2stems-16kHz"):
            get_config(unknown)
        with pytest.raises(resolve.ModelNotFoundError, match="is none of Spleeter's models: .*spleeter:5stems-16kHz"):
            resolve.resolve_model_dir(unknown, download=False)


def test_separate_refuses_an_unknown_suffix(tmp_path, capsys):
    assert main(["separate", "--no-progress", "-p", "spleeter:2stems-22kHz", "-o", str(tmp_path), EXAMPLE]) == 2
    error = capsys.readouterr().err
    assert "error: model 'spleeter:2stems-22kHz' not found" in error and "spleeter:2stems-16kHz" in error
    assert not os.listdir(tmp_path)


def test_the_python_api_and_training_take_the_names(tmp_path):
    """load_model / load_separator (stembeam.Separator's) build F 1536 U-nets with the official
    weights; `train --config` and `prepare-dataset --model_config` take the names, and records
    of the other band are refused."""
    from stembeam.model.load import load_model, load_separator
    from stembeam.pipeline.prepare import model_config
    from stembeam.pipeline.train import _check_records

    wide_config, wide = load_model("spleeter:2stems-16kHz")
    base_config, base = load_model("spleeter:2stems")
    assert wide_config.name == "spleeter:2stems-16kHz" and wide.input_shape == (None, 512, 1536, 2) and base.input_shape == (None, 512, 1024, 2)
    for got, want in zip(wide.weights, base.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert load_separator("2stems-16kHz")[0] == wide_config
    assert model_config("spleeter:4stems-16kHz") == get_config("4stems-16kHz")
    (tmp_path / "config.json").write_text(base_config.to_json())
    with pytest.raises(SystemExit, match="does not match the records .*: F differ"):
        _check_records(str(tmp_path), wide_config)


@pytest.fixture()
def short_song(tmp_path):
    path = str(tmp_path / "song.wav")
    write_audio(path, load_audio(EXAMPLE)[: 4 * 44100])
    return path


def _rows(output):
    import pyarrow.parquet as pq

    folder = os.path.join(output, "metadata")
    return pq.read_table([os.path.join(folder, f) for f in sorted(os.listdir(folder))]).to_pylist()


def _vocals(output):
    with open(os.path.join(stem_folder(str(output), "song"), "vocals.wav"), "rb") as handle:
        return handle.read()


def test_pipeline_records_the_name_and_redoes_the_other_band(tmp_path, short_song):
    """A corpus job with --model spleeter:2stems-16kHz: rows with that model; a rerun is done
    already; a rerun with spleeter:2stems redoes the track (the config, F, is in the resume
    key) and so does going back."""
    manifest = write_manifest(tmp_path / "m.csv", [(short_song, "song")])
    output = tmp_path / "out"
    assert run_corpus(manifest, output, "--model", "spleeter:2stems-16kHz") == (1, 0, 0)
    assert sorted((r["stem"], r["model"], r["status"]) for r in _rows(output)) == [(s, "spleeter:2stems-16kHz", "ok") for s in sorted(STEMS)]
    wide_bytes = _vocals(output)
    with open(os.path.join(stem_folder(str(output), "song"), ".stembeam.json"), encoding="utf-8") as handle:
        wide_key = json.load(handle)["key"]
    assert run_corpus(manifest, output, "--model", "spleeter:2stems-16kHz") == (0, 1, 0)

    assert run_corpus(manifest, output, "--model", "spleeter:2stems") == (1, 0, 0), "not already done"
    assert sorted((r["stem"], r["model"]) for r in _rows(output)) == [(s, "spleeter:2stems") for s in sorted(STEMS)]
    with open(os.path.join(stem_folder(str(output), "song"), ".stembeam.json"), encoding="utf-8") as handle:
        base_key = json.load(handle)["key"]
    assert base_key["model_fingerprint"] == wide_key["model_fingerprint"], "the same weights"
    assert base_key["config_sha256"] != wide_key["config_sha256"]
    assert _vocals(output) != wide_bytes
    assert run_corpus(manifest, output, "--model", "2stems-16kHz") == (1, 0, 0), "back to 16 kHz"
    assert _vocals(output) == wide_bytes


def _input_shape(keras_uri):
    """The input shape a model.keras file is built for (read from its config, without loading it)."""
    import zipfile

    with zipfile.ZipFile(keras_uri) as archive:
        layers = json.loads(archive.read("config.json"))["config"]["layers"]
    return tuple(next(layer for layer in layers if layer["class_name"] == "InputLayer")["config"]["batch_shape"])


def test_the_model_export_is_never_reused_across_bands(tmp_path):
    """The export under {output}/_model/ (what worker processes load) is stamped with the config:
    the 16 kHz and 11 kHz names get their own; two Spleeter configs of one name (model_dir
    2stems) and F 1024 / 1536 do not reuse each other's; a folder's own model.keras built for F
    1024 is not loaded for a 16 kHz name."""
    from stembeam.model.load import CONFIG_FILE, KERAS_FILE, load_model
    from stembeam.pipeline.prepared_model import ModelRequest, prepare_model

    output = str(tmp_path / "out")
    wide = prepare_model(ModelRequest("spleeter:2stems-16kHz", None), output)
    base = prepare_model(ModelRequest("spleeter:2stems", None), output)
    assert wide.keras_uri != base.keras_uri and wide.fingerprint == base.fingerprint
    assert _input_shape(wide.keras_uri) == (None, 512, 1536, 2) and _input_shape(base.keras_uri) == (None, 512, 1024, 2)

    configs = {}
    for f in (1024, 1536):
        path = tmp_path / "2stems.json"  # one file edited in place: one config name
        path.write_text(json.dumps(dict(SPLEETER_16KHZ, model_dir=OFFICIAL, F=f)))
        prepared = prepare_model(ModelRequest(str(path), None), output)
        configs.setdefault(prepared.config.name, set()).add(prepared.keras_uri)
        assert prepared.config.F == f and _input_shape(prepared.keras_uri) == (None, 512, f, 2), f
    assert list(configs) == ["spleeter-config:2stems"] and len(configs["spleeter-config:2stems"]) == 1
    stamp = json.loads(open(os.path.join(os.path.dirname(prepared.keras_uri), "source.json")).read())
    assert set(stamp) == {"weights_sha256", "config_sha256"}

    # A stembeam export folder of the 11 kHz model (model.keras, stembeam.json).
    export = tmp_path / "export"
    export.mkdir()
    config, model = load_model("spleeter:2stems")
    model.save(str(export / KERAS_FILE))
    (export / CONFIG_FILE).write_text(config.to_json())
    assert prepare_model(ModelRequest("spleeter:2stems", str(export)), output).keras_uri == str(export / KERAS_FILE)
    prepared = prepare_model(ModelRequest("spleeter:2stems-16kHz", str(export)), output)
    assert prepared.config.name == "spleeter:2stems-16kHz" and prepared.keras_uri.startswith(output)
    assert _input_shape(prepared.keras_uri) == (None, 512, 1536, 2)
    loaded_config, loaded = load_model("spleeter:2stems-16kHz", str(export))
    assert loaded_config == get_config("2stems-16kHz") and loaded.input_shape == (None, 512, 1536, 2)
    for got, want in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_export_of_the_16khz_model_separates_the_same(tmp_path, separated):
    """`stembeam export -p spleeter:2stems-16kHz`: stembeam.json says F 1536, the SavedModel takes
    1536-bin spectrograms and its waveform signature keeps the band above 11 kHz, and
    `separate -p EXPORT` writes the name's very bytes."""
    import tensorflow as tf

    from stembeam.model.export import SAVED_MODEL_DIR
    from stembeam.model.load import CONFIG_FILE

    folder = tmp_path / "export"
    assert main(["export", "-p", "spleeter:2stems-16kHz", "-o", str(folder)]) == 0
    saved = json.loads((folder / CONFIG_FILE).read_text())
    assert saved["name"] == "spleeter:2stems-16kHz" and saved["F"] == 1536
    loaded = tf.saved_model.load(str(folder / SAVED_MODEL_DIR))
    spectrogram = loaded.signatures["spectrogram"](mix_spectrogram=tf.zeros([1, 512, 1536, 2]))
    assert spectrogram["source_spectrograms"].shape == (1, 512, 1536, 2, 2)
    waveform = load_audio(EXAMPLE)[: SECONDS * 44100]
    vocals = loaded.signatures["serving_default"](waveform=tf.constant(waveform))["vocals"].numpy()
    assert high_band_share(vocals) > 1e-3
    out = tmp_path / "out"
    assert main(["separate", "--no-progress", "-p", str(folder), "-o", str(out), "-d", str(SECONDS), EXAMPLE]) == 0
    for stem in STEMS:
        assert (out / "audio_example" / f"{stem}.wav").read_bytes() == separated["name"][stem], stem
