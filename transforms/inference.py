"""SeparateChunks: segment samples -> RunInference (Spleeter's graph per batch of segments) -> source signals."""
from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import RunInference

from stembeam.model.config import ModelConfig
from stembeam.model.separation import segment_frames
from stembeam.model.wiener import wiener_segment
from stembeam.transforms.model_handler import ModelSource, model_handler
from stembeam.transforms.records import Chunk
from stembeam.transforms.timing import timer


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
    the last stem of it).

    Args:
        config: ModelConfig.
        mwf: the inference gave the Wiener filter's inputs ``(STFT [T, bins, 2], source
            magnitudes [T, F, 2, S])``; else the soft-mask signals ``[L, 2, S]``.
        mwf_block_frames: frames per Wiener-filter block.
        residual: carry the mixture as one more source (see above).
    """

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


@dataclasses.dataclass(frozen=True)
class Separation:
    """How segments become source signals: the U-nets (``model``), segments per inference
    ``batch_size``, soft masks or the Wiener filter (``mwf``, by blocks of ``mwf_block_frames``)
    and whether the mixture travels along for a ``residual`` last stem.

    Attributes:
        model: ModelSource.
        batch_size: segments per inference (B).
        mwf: the Wiener filter instead of soft masks.
        mwf_block_frames: frames per Wiener-filter block.
        residual: the last stem is the mixture minus the others.
    """

    model: ModelSource
    batch_size: int = 2
    mwf: bool = False
    mwf_block_frames: int = 512
    residual: bool = False


class SeparateChunks(beam.PTransform):
    """Chunk (with samples) -> ``(Chunk reference, its [L, 2, S] source signals)``, in the order
    the chunks came, batched across tracks by RunInference.

    Args:
        separation: Separation.
    """

    def __init__(self, separation: "Separation"):
        super().__init__()
        self._separation = separation

    def expand(self, chunks):
        how = self._separation
        return (
            chunks
            | "KeyBySegment" >> beam.ParDo(_KeyBySegment())
            | "RunInference" >> RunInference(model_handler(how.model, how.batch_size, how.mwf))
            | "Filter" >> beam.ParDo(FilterSegments(how.model.config, how.mwf, how.mwf_block_frames, how.residual))
        )
