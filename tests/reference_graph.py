"""Spleeter's own exported inference graph (model.meta + checkpoint): the reference for exact numbers."""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

STEM_TENSORS = {"vocals": "strided_slice_13:0", "accompaniment": "strided_slice_23:0"}


class OfficialGraph:
    """Runs ``../shared/models/spleeter/2stems/model.meta`` with its checkpoint restored."""

    def __init__(self, model_dir: str):
        self.graph = tf.Graph()
        with self.graph.as_default():
            saver = tf.compat.v1.train.import_meta_graph(os.path.join(model_dir, "model.meta"), clear_devices=True)
            self.session = tf.compat.v1.Session(graph=self.graph)
            saver.restore(self.session, os.path.join(model_dir, "model"))
        self.waveform = self.graph.get_tensor_by_name("waveform:0")

    def run(self, waveform: np.ndarray, tensors) -> list:
        """Evaluate graph tensors (names) for ``waveform [n, 2]``."""
        return self.session.run(list(tensors), feed_dict={self.waveform: waveform})

    def separate(self, waveform: np.ndarray) -> dict:
        """``{stem: [n, 2]}`` soft-mask output of the official graph."""
        values = self.run(waveform, STEM_TENSORS.values())
        return dict(zip(STEM_TENSORS, values))

    def wiener_inputs(self, waveform: np.ndarray):
        """The graph's own source spectrograms ``[frames, F, 2, S]`` and mixture STFT ``[frames, 2049, 2]``."""
        vocals, accompaniment, mix = self.run(
            waveform, ["vocals_spectrogram/mul:0", "accompaniment_spectrogram/mul:0", "transpose_1:0"]
        )
        frames = mix.shape[0]
        sources = np.stack([s.reshape(-1, *s.shape[2:]) for s in (vocals, accompaniment)], axis=-1)[:frames]
        return sources, mix
