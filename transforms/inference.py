"""SeparateChunks: segment samples -> RunInference (Spleeter's graph per batch of segments) -> source signals."""
from __future__ import annotations

import concurrent.futures
import functools
from typing import Iterable, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from stembeam.model.config import ModelConfig
from stembeam.model.separation import segment_frames, wiener_segment
from stembeam.transforms import storage
from stembeam.transforms.records import Chunk
from stembeam.transforms.timing import timer


# Wall time of each part of the separation graph per batch (Beam distributions of ms; the
# benchmark prints their sums): STFT, U-nets, masks and inverse STFT with the segment's own
# overlap-add.
PART_METRICS = {"stft": "stft_ms", "unets": "unets_ms", "synthesis": "masks_istft_ms"}


def segment_inference_fn(
    separator, batch: Sequence[np.ndarray], inference_args: dict, model_id: str | None = None, *, mwf: bool,
) -> Iterable[PredictionResult]:
    """Beam inference_fn: segment samples ``[L, 2]`` -> ``(outputs, precision that ran)``; outputs:
    soft-mask source signals ``[L, 2, S]``, or with ``mwf`` ``(STFT [T, N//2+1, 2], source
    magnitudes [T, F, 2, S])``.

    ``separator``: the model.segment_graph.SegmentSeparator the handler loaded (or a
    concurrent.futures.Future of the launcher's, still loading when the workers started). STFT
    and U-nets run as TF calls per batch, masks and inverse STFT in numpy; silent segments (all
    samples zero) get zero signals without a model call.
    """
    if isinstance(separator, concurrent.futures.Future):
        separator = separator.result()
    spans = np.stack(batch)
    timings = {}
    outputs = list(zip(*separator.spectra(spans, timings))) if mwf else list(separator.soft(spans, timings))
    for part, seconds in timings.items():
        Metrics.distribution("stembeam", PART_METRICS[part]).update(int(round(1000 * seconds)))
    if not mwf:
        silent = sum(not span.any() for span in batch)
        if silent:
            Metrics.counter("stembeam", "segments_silent").inc(silent)
    # What ran (a worker without bfloat16 falls back to float32; a T4 runs mixed_float16), recorded
    # with the stems and in their resume key.
    return [PredictionResult(example, (output, separator.precision), model_id) for example, output in zip(batch, outputs)]


_LAUNCHER_MODELS = {}


def share_with_workers_in_process(keras_uri: str, separator) -> None:
    """Let workers running in this process (the DirectRunner's in-memory and multi-threading
    modes) use ``separator`` (a SegmentSeparator, or a concurrent.futures.Future of one)
    instead of loading ``keras_uri`` again; other workers load the file. Undone by
    ``stop_sharing`` when the job ends, so no model outlives its job."""
    _LAUNCHER_MODELS[keras_uri] = separator


def stop_sharing(keras_uri: str) -> None:
    """Forget the launcher's model of ``keras_uri`` (the job is over)."""
    _LAUNCHER_MODELS.pop(keras_uri, None)


class KerasFileModelHandler(ModelHandler):
    """RunInference's handler for a ``model.keras`` file: loads it (or reuses the launcher's
    model in-process) as a model.segment_graph.SegmentSeparator of ``config`` in ``precision``,
    the model RunInference shares between the worker's threads; ``inference_fn`` runs batches.

    Other workers read the file through Beam FileSystems into a local temporary copy (once per
    process: RunInference shares the loaded model), so a gs:// model is read like every other
    gs:// input, with the same credentials, emulator and retries, and not through TensorFlow's
    own GCS filesystem. Built on Beam's base ModelHandler rather than TFModelHandlerNumpy,
    whose module imports tensorflow-hub (0.3 s of every worker's start-up) for hub models only.
    """

    def __init__(self, model_uri: str, config: ModelConfig, inference_fn, *, precision: str = "float32", min_batch_size: int | None = None,
                 max_batch_size: int | None = None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._model_uri = model_uri
        self._config = config
        self._precision = precision
        self._inference_fn = inference_fn

    def load_model(self):
        shared = _LAUNCHER_MODELS.get(self._model_uri)
        if shared is not None:
            return shared
        import keras

        from stembeam.model.segment_graph import SegmentSeparator

        with storage.local_copy(self._model_uri) as path:
            return SegmentSeparator(keras.models.load_model(path, compile=False), self._config, self._precision)

    def update_model_path(self, model_path: str | None = None):
        self._model_uri = model_path or self._model_uri

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args: dict | None = None) -> Iterable[PredictionResult]:
        return self._inference_fn(model, batch, inference_args or {}, self._model_uri)

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(element.nbytes for element in batch)

    def get_metrics_namespace(self) -> str:
        return "BeamML_TF_Numpy"


class SegmentModelHandler(KeyedModelHandler):
    """KeyedModelHandler over ``(Chunk reference, samples)`` that counts the batches whose
    segments come from more than one track (``stembeam:batches_across_tracks``)."""

    def run_inference(self, batch, model, inference_args=None):
        if len({chunk.track.track_id for chunk, _ in batch}) > 1:
            Metrics.counter("stembeam", "batches_across_tracks").inc()
        return super().run_inference(batch, model, inference_args)


def model_handler(keras_uri: str, config: ModelConfig, batch_size: int, mwf: bool = False, precision: str = "float32") -> KeyedModelHandler:
    """Keyed TF handler for the U-nets' ``model.keras``, fed segment samples; one batch may
    mix segments of different tracks; ``precision`` of the U-nets (model.precision).

    Batches hold exactly ``batch_size`` segments (a bundle's last one may hold fewer): Beam's
    adaptive batching picked sizes from 1 to ``batch_size`` by timing, so peak memory (one
    batch's activations) changed from run to run. Stems do not depend on the batch size.
    """
    return SegmentModelHandler(
        KerasFileModelHandler(
            keras_uri,
            config,
            functools.partial(segment_inference_fn, mwf=mwf),
            precision=precision,
            min_batch_size=batch_size,
            max_batch_size=batch_size,
        )
    )


class _KeyBySegment(beam.DoFn):
    def process(self, chunk: Chunk):
        yield chunk.reference(), chunk.span


class FilterSegments(beam.DoFn):
    """``(Chunk reference, prediction)`` -> ``(Chunk reference with the precision that ran,
    source signals [L, 2, S] float32)``; the Wiener filter (blocks of ``mwf_block_frames``
    within the segment) runs here, the soft masks ran in the inference.

    With ``residual`` the signals carry the mixture as one more channel, ``[L, 2, S+1]``: the
    segment's first ``T*hop`` samples (all of them for the last segment), zeros after, so that
    overlap-adding the segments in order gives the track's mixture exactly (WriteStems makes
    the last stem of it)."""

    def __init__(self, config: ModelConfig, mwf: bool, mwf_block_frames: int, residual: bool = False):
        self._config = config
        self._mwf = mwf
        self._block = mwf_block_frames
        self._residual = residual
        self._chunks = Metrics.counter("stembeam", "chunks_inferred")
        self._wiener_ms = Metrics.distribution("stembeam", "wiener_ms")

    def process(self, element):
        chunk, result = element
        inference, precision = result.inference
        if self._mwf:
            spec, sources = inference
            frames = segment_frames(chunk.index, chunk.n_samples, self._config)
            with timer(self._wiener_ms):
                signals = wiener_segment(spec, sources, self._config, frames, self._block)
        else:
            signals = inference
        if self._residual:
            mixture = np.array(result.example, dtype=np.float32)
            if chunk.index < chunk.count - 1:
                mixture[self._config.T * self._config.frame_step :] = 0.0
            signals = np.concatenate([signals, mixture[..., np.newaxis]], axis=-1)
        self._chunks.inc()
        yield chunk.reference(precision=precision), signals


class SeparateChunks(beam.PTransform):
    """Chunk (with samples) -> ``(Chunk reference, its [L, 2, S] source signals)``, in the order
    the chunks came, batched across tracks by RunInference."""

    def __init__(self, config: ModelConfig, keras_uri: str, batch_size: int = 2, mwf: bool = False, mwf_block_frames: int = 512,
                 precision: str = "float32", residual: bool = False):
        super().__init__()
        self._residual = residual
        self._precision = precision
        self._config = config
        self._keras_uri = keras_uri
        self._batch_size = batch_size
        self._mwf = mwf
        self._block = mwf_block_frames

    def expand(self, chunks):
        return (
            chunks
            | "KeyBySegment" >> beam.ParDo(_KeyBySegment())
            | "RunInference" >> RunInference(model_handler(self._keras_uri, self._config, self._batch_size, self._mwf, self._precision))
            | "Filter" >> beam.ParDo(FilterSegments(self._config, self._mwf, self._block, self._residual))
        )
