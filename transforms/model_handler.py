"""RunInference's model handler for the U-nets: a ``model.keras`` file (local or gs://) loaded
once per worker process as a model.segment_graph.SegmentSeparator, or the launcher's own model
for workers in its process, shared through Beam's ``apache_beam.utils.shared.Shared``."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
from typing import Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult
from apache_beam.utils.shared import Shared

from stembeam.model.config import ModelConfig
from stembeam.transforms import storage

# Wall time of each part of the separation graph per batch (Beam distributions of ms; the
# benchmark prints their sums): STFT, U-nets, masks and inverse STFT with the segment's own
# overlap-add.
PART_METRICS = {"stft": "stft_ms", "unets": "unets_ms", "synthesis": "masks_istft_ms"}


class LoadedModel:
    """What the workers of one process share: a SegmentSeparator, ready or still loading (the
    launcher loads it in the background while the job starts).

    Args:
        separator: the SegmentSeparator when already loaded.
        pending: a Future giving it, while it loads.
    """

    def __init__(self, separator=None, pending: Optional[concurrent.futures.Future] = None):
        self._separator, self._pending = separator, pending

    def separator(self):
        """The SegmentSeparator, once loaded (waits for it; re-raises the launcher's error if loading failed)."""
        if self._separator is None:
            self._separator = self._pending.result()
        return self._separator


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where workers get the U-nets: ``keras_uri`` (a ``model.keras``, local or gs://) built for
    ``config``, run in ``precision``; ``shared``: Beam's handle under which the launcher already
    holds the model for workers of its own process (None: every worker loads the file).

    Attributes:
        keras_uri: the ``model.keras``.
        config: its ModelConfig.
        precision: ``float32``, ``bfloat16`` or ``auto``.
        shared: a ``beam.utils.shared.Shared``, or None.
    """

    keras_uri: str
    config: ModelConfig
    precision: str = "float32"
    shared: Optional[Shared] = None


class KerasFileModelHandler(ModelHandler):
    """RunInference's handler for a ``model.keras`` file (ModelSource): ``load_model`` gives a
    LoadedModel, the launcher's one when it shares it (ModelSource.shared), else the file loaded
    once per process (RunInference shares it between the worker's threads); ``inference_fn``
    runs the batches.

    Other workers read the file through Beam FileSystems into a local temporary copy, so a
    gs:// model is read like every other gs:// input, with the same credentials, emulator and
    retries, and not through TensorFlow's own GCS filesystem. Built on Beam's base ModelHandler
    rather than TFModelHandlerNumpy, whose module imports tensorflow-hub (0.3 s of every
    worker's start-up) for hub models only.

    Args:
        source: ModelSource.
        inference_fn: ``inference_fn(separator, batch, inference_args, model_id)`` (see
            segment_inference_fn).
        min_batch_size, max_batch_size: RunInference's batching bounds.
    """

    def __init__(self, source: ModelSource, inference_fn, *, min_batch_size: Optional[int] = None, max_batch_size: Optional[int] = None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self._source = source
        self._inference_fn = inference_fn

    def load_model(self) -> LoadedModel:
        if self._source.shared is not None:
            return self._source.shared.acquire(self._load_file)
        return self._load_file()

    def _load_file(self) -> LoadedModel:
        import keras

        from stembeam.model.segment_graph import SegmentSeparator

        with storage.local_copy(self._source.keras_uri) as path:
            model = keras.models.load_model(path, compile=False)
        return LoadedModel(SegmentSeparator(model, self._source.config, self._source.precision))

    def update_model_path(self, model_path: Optional[str] = None):
        if model_path:
            self._source = dataclasses.replace(self._source, keras_uri=model_path, shared=None)

    def run_inference(self, batch: Sequence[np.ndarray], model: LoadedModel, inference_args: Optional[dict] = None) -> Iterable[PredictionResult]:
        return self._inference_fn(model.separator(), batch, inference_args or {}, self._source.keras_uri)

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


def segment_inference_fn(
    separator, batch: Sequence[np.ndarray], inference_args: dict, model_id: Optional[str] = None, *, mwf: bool,
) -> Iterable[PredictionResult]:
    """Beam inference_fn: segment samples ``[L, 2]`` -> ``(outputs, precision that ran)``.

    Args:
        separator: the model.segment_graph.SegmentSeparator of the worker.
        batch: segment samples, each ``[L, 2]`` float32.
        mwf: give the Wiener filter's inputs instead of soft-mask signals.
    Returns:
        PredictionResults whose inference is ``(outputs, precision)``: soft-mask source signals
        ``[L, 2, S]``, or with ``mwf`` ``(STFT [T, N//2+1, 2], source magnitudes [T, F, 2, S])``.
        STFT and U-nets run as TF calls per batch, masks and inverse STFT in numpy; silent
        segments (all samples zero) get zero signals without a model call.
    """
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


def model_handler(source: ModelSource, batch_size: int, mwf: bool = False) -> KeyedModelHandler:
    """Keyed handler for the U-nets of ``source``, fed segment samples; one batch may mix segments
    of different tracks.

    Batches hold exactly ``batch_size`` segments (a bundle's last one may hold fewer): Beam's
    adaptive batching picked sizes from 1 to ``batch_size`` by timing, so peak memory (one
    batch's activations) changed from run to run. Stems do not depend on the batch size.

    Args:
        source: ModelSource.
        batch_size: segments per batch (B).
        mwf: the inference gives the Wiener filter's inputs (see segment_inference_fn).
    Returns:
        SegmentModelHandler over ``(Chunk reference, samples [L, 2] float32)``.
    """
    inference = functools.partial(segment_inference_fn, mwf=mwf)
    return SegmentModelHandler(KerasFileModelHandler(source, inference, min_batch_size=batch_size, max_batch_size=batch_size))
