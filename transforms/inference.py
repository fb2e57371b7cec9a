"""SeparateChunks: segment samples -> RunInference (TF U-nets) -> per-segment source signals."""
from __future__ import annotations

import dataclasses
import threading

from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.tensorflow_inference import ModelType, TFModelHandlerNumpy

from model.config import ModelConfig
from model.separation import mix_magnitude, segment_stft, soft_mask_segment
from transforms.records import Chunk

_COMPILED = {}
_LOCK = threading.Lock()


def compiled_inference_fn(model, batch: Sequence[np.ndarray], inference_args: dict, model_id: str | None = None) -> Iterable[PredictionResult]:
    """Beam inference_fn: one traced tf.function per model instead of eager layer-by-layer calls."""
    import tensorflow as tf

    with _LOCK:
        function, lock = _COMPILED.get(id(model), (None, None))
        if function is None:
            function = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            lock = threading.Lock()
            _COMPILED[id(model)] = (function, lock)
    inputs = tf.convert_to_tensor(np.stack(batch))
    # Keras' tracing is not thread-safe (concurrent traces gave wrong outputs on the multi-threaded
    # DirectRunner), and one call already uses every core: one batch at a time per model.
    with lock:
        predictions = function(inputs).numpy()
    return [PredictionResult(example, prediction, model_id) for example, prediction in zip(batch, predictions)]


def model_handler(keras_uri: str, batch_size: int) -> KeyedModelHandler:
    """Keyed TF handler for ``model.keras``: mixture magnitudes ``[T, F, 2]`` -> sources ``[T, F, 2, S]``.

    One batch may mix segments of different tracks.
    """
    return KeyedModelHandler(
        TFModelHandlerNumpy(
            keras_uri,
            model_type=ModelType.SAVED_MODEL,
            load_model_args={"compile": False},
            inference_fn=compiled_inference_fn,
            min_batch_size=1,
            max_batch_size=batch_size,
        )
    )


class _ToMagnitude(beam.DoFn):
    def __init__(self, config: ModelConfig):
        self._config = config

    def process(self, chunk: Chunk):
        stft = segment_stft(chunk.span, self._config)
        yield dataclasses.replace(chunk, stft=stft), mix_magnitude(stft, self._config)


class _ApplyMasks(beam.DoFn):
    """(Chunk, prediction) -> (track_id, part). Soft masks are applied per segment; for
    the Wiener filter the source magnitudes and samples go on to the whole-track stage."""

    def __init__(self, config: ModelConfig, mwf: bool):
        self._config = config
        self._mwf = mwf
        self._chunks = Metrics.counter("stembeam", "chunks_inferred")

    def process(self, element: Any):
        chunk, result = element
        self._chunks.inc()
        sources = np.asarray(result.inference)
        if self._mwf:
            payload = (sources, chunk.span)
        else:
            payload = soft_mask_segment(chunk.stft, sources, self._config)
        chunk_info = Chunk(chunk.track, chunk.index, chunk.count, chunk.n_samples, span=None)
        yield chunk.track.track_id, (chunk_info, payload)


class SeparateChunks(beam.PTransform):
    """Chunk -> ``(track_id, (Chunk without samples, part))``.

    ``part`` is the segment's ``[segment_samples, 2, S]`` source signals (soft mask) or
    ``(sources [T, F, 2, S], samples [segment_samples, 2])`` with ``mwf``.
    """

    def __init__(self, config: ModelConfig, keras_uri: str, batch_size: int = 4, mwf: bool = False):
        super().__init__()
        self._config = config
        self._keras_uri = keras_uri
        self._batch_size = batch_size
        self._mwf = mwf

    def expand(self, chunks):
        return (
            chunks
            | "Magnitude" >> beam.ParDo(_ToMagnitude(self._config))
            | "RunInference" >> RunInference(model_handler(self._keras_uri, self._batch_size))
            | "ApplyMasks" >> beam.ParDo(_ApplyMasks(self._config, self._mwf))
        )
