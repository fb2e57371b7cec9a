"""Exports load in Keras (as the corpus job's model handler loads them) and TF Serving's SavedModel, with the same numbers."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from stembeam.model.export import SAVED_MODEL_DIR, export_model
from stembeam.model.load import CONFIG_FILE, KERAS_FILE, load_model
from tests.conftest import EXAMPLE, needs_shared, snr_db


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    config, model = load_model("spleeter:2stems")
    folder = str(tmp_path_factory.mktemp("export"))
    export_model(model, config, folder)
    return folder, config, model


@needs_shared
def test_export_layout_and_keras_file(exported):
    folder, config, model = exported
    assert sorted(os.listdir(folder)) == sorted([CONFIG_FILE, KERAS_FILE, SAVED_MODEL_DIR])
    assert json.load(open(os.path.join(folder, CONFIG_FILE)))["instruments"] == ["vocals", "accompaniment"]
    reloaded = keras.models.load_model(os.path.join(folder, KERAS_FILE), compile=False)
    batch = np.random.default_rng(0).uniform(0, 1, (1, 512, 1024, 2)).astype(np.float32)
    np.testing.assert_array_equal(reloaded(batch).numpy(), model(batch).numpy())


@needs_shared
def test_saved_model_serving_signature_matches_official_graph(exported, official_graph, decoded):
    folder, _, _ = exported
    loaded = tf.saved_model.load(os.path.join(folder, SAVED_MODEL_DIR))
    waveform = decoded(EXAMPLE)
    ours = loaded.signatures["serving_default"](waveform=tf.constant(waveform))
    reference = official_graph.separate(waveform)
    for stem in reference:
        assert snr_db(reference[stem], ours[stem].numpy()) >= 100.0
    spectrogram = loaded.signatures["spectrogram"](mix_spectrogram=tf.zeros([1, 512, 1024, 2]))
    assert spectrogram["source_spectrograms"].shape == (1, 512, 1024, 2, 2)


@needs_shared
def test_separate_accepts_an_exported_folder(exported, tmp_path):
    from stembeam.pipeline.cli import main

    folder, _, _ = exported
    assert main(["separate", "--no-progress", "-p", folder, "-o", str(tmp_path), "-d", "2", EXAMPLE]) == 0
    assert sorted(os.listdir(tmp_path / "audio_example")) == ["accompaniment.wav", "vocals.wav"]
