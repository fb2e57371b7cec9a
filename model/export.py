"""Export a separator: ``model.keras`` (what the corpus job's workers load, transforms/model_handler.py),
a TF SavedModel, ``stembeam.json``.

SavedModel signatures:
- ``serving_default``: ``waveform [n, 2]`` float32 at 44.1 kHz -> one ``[n, 2]`` output per
  instrument (Spleeter's graph: STFT, U-nets, ratio masks, inverse STFT), for TF Serving.
- ``spectrogram``: ``mix_spectrogram [B, T, F, 2]`` -> ``source_spectrograms [B, T, F, 2, S]``.
"""
from __future__ import annotations

import os

import keras
import tensorflow as tf

from stembeam.model import segment_graph
from stembeam.model.config import ModelConfig
from stembeam.model.load import CONFIG_FILE, KERAS_FILE

SAVED_MODEL_DIR = "saved_model"


def waveform_separator(model: keras.Model, config: ModelConfig):
    """The graph's soft-mask separation of a whole waveform as one tf.function.

    Args:
        model: the Keras U-nets.
        config: its ModelConfig.
    Returns:
        A tf.function ``waveform [samples, 2] float32 -> {instrument: [samples, 2] float32}``.
    """

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="waveform")])
    def separate(waveform):
        n = tf.shape(waveform)[0]
        spec = segment_graph.stft(waveform, config, pad_end=True)  # [frames, bins, channels]
        frames = tf.shape(spec)[0]
        pad = tf.math.floormod(config.T - tf.math.floormod(frames, config.T), config.T)
        magnitude = tf.pad(segment_graph.magnitudes(spec, config), [[0, pad], [0, 0], [0, 0]])
        segments = tf.reshape(magnitude, [-1, config.T, config.F, 2])
        sources = segment_graph.source_magnitudes(model, segments, config)
        sources = tf.reshape(sources, [-1, config.F, 2, len(config.instruments)])[:frames]
        masked = segment_graph.apply_masks(spec, segment_graph.ratio_masks(sources, config))
        return {name: segment_graph.inverse_stft(masked[..., k], config)[:n] for k, name in enumerate(config.instruments)}

    return separate


def export_model(model: keras.Model, config: ModelConfig, directory: str) -> str:
    """Write ``model.keras``, ``saved_model/`` (signatures ``serving_default``: waveform_separator,
    ``spectrogram``: ``[B, T, F, channels] -> [B, T, F, 2, S]``) and ``stembeam.json``.

    Args:
        model: the Keras U-nets.
        config: its ModelConfig.
        directory: the folder (local or gs://; created if needed).
    Returns:
        ``directory``.
    """
    tf.io.gfile.makedirs(directory)
    model.save(os.path.join(directory, KERAS_FILE))
    module = tf.Module()
    module.model = model
    module.separate = waveform_separator(model, config)
    module.spectrogram = tf.function(
        lambda x: {"source_spectrograms": model(x, training=False)},
        input_signature=[tf.TensorSpec([None, config.T, config.F, config.n_channels], tf.float32, name="mix_spectrogram")],
    )
    tf.saved_model.save(
        module,
        os.path.join(directory, SAVED_MODEL_DIR),
        signatures={"serving_default": module.separate, "spectrogram": module.spectrogram},
    )
    with tf.io.gfile.GFile(os.path.join(directory, CONFIG_FILE), "w") as handle:
        handle.write(config.to_json())
    return directory
