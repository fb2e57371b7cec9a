"""Spleeter's separation graph in TensorFlow, one batch of T-frame segments at a time.

A segment's samples ``span [L, 2]`` (``L = (T-1)*hop + N``, see model.separation) have an
STFT equal to T frames of the whole track's, so the same ops as Spleeter's exported graph
(``tf.signal`` STFT, U-nets, ratio masks, inverse STFT) run per segment; overlap-adding the
segment signals in order rebuilds the track. The STFT and the U-nets are TF calls (every core,
without the GIL); the masks and inverse STFT of the official models run in numpy
(model.synthesis, the same bits as this module's synthesis graph, which the other models keep).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import tensorflow as tf

from stembeam.model import spectral, synthesis
from stembeam.model.checkpoint import CheckpointWeights
from stembeam.model.config import ModelConfig
from stembeam.model.precision import effective_precision, mixed_precision_model
from stembeam.model.unet import reduced_precision_unets


def _hann(frame_length, dtype):
    return tf.signal.hann_window(frame_length, periodic=True, dtype=dtype)


def stft(waveforms: tf.Tensor, config: ModelConfig, pad_end: bool = False) -> tf.Tensor:
    """The graph's STFT (``tf.signal.stft``, periodic Hann window).

    Args:
        waveforms: ``[..., samples, channels]`` float32.
        config: ModelConfig (N, hop).
        pad_end: zero pad the end to ``ceil(samples / hop)`` frames.
    Returns:
        ``[..., frames, bins, channels]`` complex64.
    """
    channels_first = tf.experimental.numpy.moveaxis(waveforms, -1, -2)
    spec = tf.signal.stft(channels_first, config.frame_length, config.frame_step, window_fn=_hann, pad_end=pad_end)
    return tf.experimental.numpy.moveaxis(spec, -3, -1)


def inverse_stft(spec: tf.Tensor, config: ModelConfig) -> tf.Tensor:
    """The graph's inverse STFT, with its 2/3 window gain.

    Args:
        spec: ``[..., frames, bins, channels]`` complex64.
        config: ModelConfig.
    Returns:
        ``[..., (frames - 1) * hop + N, channels]`` float32.
    """
    channels_first = tf.experimental.numpy.moveaxis(spec, -1, -3)
    wave = tf.signal.inverse_stft(channels_first, config.frame_length, config.frame_step, window_fn=_hann)
    return tf.experimental.numpy.moveaxis(wave * spectral.WINDOW_COMPENSATION_FACTOR, -2, -1)


def ratio_masks(sources: tf.Tensor, config: ModelConfig) -> tf.Tensor:
    """Spleeter's masks ``(y_i^e + eps/S) / (sum_j y_j^e + eps)``, extended from F to all bins.

    Args:
        sources: ``[..., frames, F, channels, S]`` source magnitudes.
        config: ModelConfig (separation_exponent, mask_extension).
    Returns:
        ``[..., frames, bins, channels, S]`` float32.
    """
    count = len(config.instruments)
    powered = sources**config.separation_exponent
    total = tf.reduce_sum(powered, axis=-1, keepdims=True) + spectral.EPSILON
    masks = (powered + spectral.EPSILON / count) / total
    return extend_masks(masks, config, len(masks.shape) - 3)


def overlap_add(frames: tf.Tensor, frame_step: int) -> tf.Tensor:
    """Overlap-add frames: ``N / hop`` shifted adds of hop-sized blocks (cheaper than
    tf.signal.overlap_and_add).

    Args:
        frames: ``[..., frames, N]``, ``N`` a multiple of ``frame_step``.
        frame_step: hop.
    Returns:
        ``[..., (frames - 1) * hop + N]``.
    """
    length = frames.shape[-1]
    q = length // frame_step
    blocks = tf.reshape(frames, tf.concat([tf.shape(frames)[:-1], [q, frame_step]], 0))
    rank = len(frames.shape)
    total = 0
    for j in range(q):
        total += tf.pad(blocks[..., j, :], [[0, 0]] * (rank - 2) + [[j, q - 1 - j], [0, 0]])
    return tf.reshape(total, tf.concat([tf.shape(total)[:-2], [-1]], 0))


def magnitudes(spec: tf.Tensor, config: ModelConfig) -> tf.Tensor:
    """The U-nets' input ``|X|`` of the first F bins: ``spec [..., T, bins, channels]`` -> ``[..., T, F, channels]`` float32."""
    return tf.abs(spec)[..., : config.F, :]


def extend_masks(masks: tf.Tensor, config: ModelConfig, axis: int) -> tf.Tensor:
    """Masks of F bins to all bins, as Spleeter's ``mask_extension`` says: ``zeros`` above F, or
    ``average``: each frame's mean over the F bins.

    Args:
        masks: F bins on ``axis``.
        config: ModelConfig.
        axis: the bins' axis.
    Returns:
        ``bins = N // 2 + 1`` on ``axis``, other axes unchanged.
    """
    extra = config.n_bins - config.F
    if config.mask_extension == "average":
        row = tf.reduce_mean(masks, axis=axis, keepdims=True)
        multiples = [1] * len(masks.shape)
        multiples[axis] = extra
        return tf.concat([masks, tf.tile(row, multiples)], axis=axis)
    padding = [[0, 0]] * len(masks.shape)
    padding[axis] = [0, extra]
    return tf.pad(masks, padding)


def source_magnitudes(model, mix: tf.Tensor, config: ModelConfig, training: bool = False) -> tf.Tensor:
    """Run the U-nets on mixture magnitudes.

    A mono model (``n_channels`` 1) separates each channel on its own (the channels go through
    the batch); its two mask channels, trained against one target channel, are averaged.

    Args:
        model: the Keras U-nets (unet.build_model) or a reduced-precision version.
        mix: ``[B, T, F, 2]`` float32 mixture magnitudes.
        config: ModelConfig.
        training: Keras' training flag (dropout, batch statistics).
    Returns:
        ``[B, T, F, 2, S]`` source magnitudes.
    """
    if config.n_channels == 2:
        return model(mix, training=training)
    batch, count = tf.shape(mix)[0], len(config.instruments)
    channels = tf.reshape(tf.transpose(mix, [0, 3, 1, 2]), [-1, config.T, config.F, 1])
    sources = tf.reduce_mean(model(channels, training=training), axis=3)  # [2B, T, F, S]
    return tf.transpose(tf.reshape(sources, [batch, 2, config.T, config.F, count]), [0, 2, 3, 1, 4])


def apply_masks(spec: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """``spec [..., bins, channels]`` complex64 times each mask ``[..., bins, channels, S]`` -> ``[..., bins, channels, S]`` complex64."""
    return spec[..., tf.newaxis] * tf.cast(masks, tf.complex64)


class SegmentSeparator:
    """Batches of segment samples ``[B, L, 2]`` through a U-net model; safe to share across threads.

    Three calls per batch (STFT, U-nets, masks and inverse STFT), so each can be timed, and
    with ``precision`` bfloat16 (model.precision) only the U-nets run in reduced precision.
    The masks and inverse STFT run in numpy on the calling thread (model.synthesis, the
    graph's bits at two thirds of its CPU time) where they can, else in the TF graph.
    Segments whose samples are all zero are not sent through the graph: their stems are
    exactly zero (every mask multiplies a zero spectrum).

    Args:
        model: the Keras U-nets, magnitudes ``[B, T, F, channels]`` -> ``[B, T, F, 2, S]``
            (unet.build_model); where bfloat16 runs on the CPU, an official checkpoint's weights
            will do (checkpoint.CheckpointWeights, model.load.load_unets).
        config: its ModelConfig.
        precision: ``float32``, ``bfloat16`` or ``auto`` (see model.precision.effective_precision).
    """

    def __init__(self, model, config: ModelConfig, precision: str = "float32"):
        self.config = config
        self.precision = effective_precision(precision)
        # What the graphs call: the Keras model (float32, exact), its mixed-precision copy (GPU),
        # or its bfloat16 transcription (CPU with bfloat16 instructions, model.unet).
        self._unet_model = model
        if isinstance(model, CheckpointWeights) and self.precision != "bfloat16":
            raise TypeError(f"SegmentSeparator: checkpoint weights alone run only the CPU's bfloat16 U-nets, not {self.precision}")
        if self.precision.startswith("mixed_"):
            self._unet_model = mixed_precision_model(model, config, self.precision)
        elif self.precision == "bfloat16":
            self._unet_model = reduced_precision_unets(model, config)
        spans = tf.TensorSpec([None, config.segment_samples, 2], tf.float32)
        # Only the F bins the masks cover are kept when the masks are zero above them.
        self._bins = config.F if config.mask_extension == "zeros" else config.n_bins
        spec = tf.TensorSpec([None, 2, config.T, self._bins], tf.complex64)
        mix = tf.TensorSpec([None, config.T, config.F, 2], tf.float32)
        sources = tf.TensorSpec([None, config.T, config.F, 2, len(config.instruments)], tf.float32)
        self._analysis = tf.function(self._analysis_graph, input_signature=[spans], autograph=False)
        self._unets = tf.function(self._unet_graph, input_signature=[mix], autograph=False)
        self._synthesis = tf.function(self._synthesis_graph, input_signature=[spec, sources], autograph=False)
        self._mwf_analysis = tf.function(self._mwf_analysis_graph, input_signature=[spans], autograph=False)
        self._window = None
        if synthesis.supports(config):
            self._window = (_hann(config.frame_length, tf.float32) * spectral.WINDOW_COMPENSATION_FACTOR).numpy()
        self._model = model
        # Keras tracing is not thread-safe (concurrent traces gave wrong outputs on the
        # multi-threaded DirectRunner): calls hold the lock until the graphs are traced; after
        # that, threads call them side by side.
        self._lock = threading.Lock()
        self._traced = {"soft": False, "spectra": False}
        self._stats_lock = threading.Lock()
        # Seconds spent per part, and calls, since the separator was made (read by the jobs'
        # metrics and the benchmark); segments answered without a model call.
        self.seconds = {"stft": 0.0, "unets": 0.0, "synthesis": 0.0}
        self.model_calls = 0
        self.silent_segments = 0

    def _analysis_graph(self, spans):
        config = self.config
        window = _hann(config.frame_length, tf.float32)
        frames = tf.signal.frame(tf.transpose(spans, [0, 2, 1]), config.frame_length, config.frame_step)  # [B, C, T, N]
        full = tf.signal.rfft(frames * window, [config.frame_length])  # [B, C, T, N//2+1]
        return full[..., : self._bins], tf.transpose(tf.abs(full[..., : config.F]), [0, 2, 3, 1])

    def _unet_graph(self, mix):
        return tf.cast(source_magnitudes(self._unet_model, mix, self.config), tf.float32)  # [B, T, F, C, S]

    def _synthesis_graph(self, spec, sources):
        config, count = self.config, len(self.config.instruments)
        window = _hann(config.frame_length, tf.float32)
        powered = tf.square(sources) if config.separation_exponent == 2 else sources**config.separation_exponent
        masks = (powered + spectral.EPSILON / count) / (tf.reduce_sum(powered, axis=-1, keepdims=True) + spectral.EPSILON)
        if config.mask_extension != "zeros":
            masks = extend_masks(masks, config, 2)
        # With zero-extended masks only F bins come in: the inverse FFT zero-pads them back,
        # exactly as multiplying by the zero-extended mask.
        masked = spec[:, tf.newaxis] * tf.cast(tf.transpose(masks, [0, 4, 3, 1, 2]), tf.complex64)  # [B, S, C, T, bins]
        pieces = tf.signal.irfft(masked, [config.frame_length]) * (window * spectral.WINDOW_COMPENSATION_FACTOR)
        return tf.transpose(overlap_add(pieces, config.frame_step), [0, 3, 2, 1])  # [B, L, C, S]

    def _mwf_analysis_graph(self, spans):
        spec = stft(spans, self.config)
        return spec, magnitudes(spec, self.config)

    def _timed(self, part, timings, function, *args):
        start = time.perf_counter()
        outputs = function(*args)
        seconds = time.perf_counter() - start
        with self._stats_lock:
            self.seconds[part] += seconds
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + seconds
        return outputs

    def _soft_signals(self, spans, frames, timings=None, pool=None, into=None):
        spec, mix = self._timed("stft", timings, self._analysis, tf.convert_to_tensor(spans))
        sources = self._timed("unets", timings, self._unets, mix)
        # np.asarray: a read-only view of the tensor's buffer (Tensor.numpy() copies it: ~10 ms
        # per 25 MB, on the thread that feeds the U-nets).
        if self._window is not None:
            return self._timed("synthesis", timings, self._synthesise, np.asarray(spec), np.asarray(sources), frames, pool, into)
        signals = np.asarray(self._timed("synthesis", timings, self._synthesis, spec, sources))
        if into is None:
            return signals
        for target, signal in zip(into, signals):
            target += signal.transpose(2, 0, 1)
        return None

    def _synthesise(self, spec, sources, frames, pool, into=None):
        """model.synthesis over the batch: on this thread, or with ``pool`` one task per segment
        and channel (each task's bits are the same as in one call)."""
        # Skipped frames must add nothing: magnitudes there are finite (inputs with Inf or NaN
        # spread through the U-nets: then every frame is synthesised, as the graph does).
        tail = [sources[b, used:] for b, used in enumerate(frames) if used < sources.shape[1]]
        if not all(np.isfinite(part).all() for part in tail):
            frames = None
        if pool is None:
            return synthesis.synthesize(spec, sources, self._window, self.config, frames=frames, into=into)
        batch, channels = spec.shape[:2]

        def one(b, c):
            used = None if frames is None else frames[b : b + 1]
            part = synthesis.synthesize(spec[b : b + 1, c : c + 1], sources[b : b + 1, ..., c : c + 1, :], self._window, self.config, frames=used,
                                        into=None if into is None else [into[b][:, :, c : c + 1]])
            if into is None:
                out[b, :, c] = part[0, :, 0]

        if into is None:
            out = np.empty((batch, self.config.segment_samples, channels, sources.shape[-1]), np.float32)
            phases = [range(batch)]
        else:
            # Neighbouring segments add into the same samples: even segments first, then odd.
            out, phases = None, [range(0, batch, 2), range(1, batch, 2)]
        for phase in phases:
            for done in [pool.submit(one, b, c) for b in phase for c in range(channels)]:
                done.result()
        return out

    def soft(self, spans: np.ndarray, timings: dict | None = None, pool=None, into=None) -> np.ndarray | None:
        """Soft-mask source signals of each segment, not yet overlap-added.

        Args:
            spans: ``[B, L, 2]`` float32 segment samples.
            timings: a dict that gets the seconds of each part (``stft``, ``unets``, ``synthesis``)
                added, or None.
            pool: a concurrent.futures executor: the masks and inverse STFT of the batch's segments
                and channels run side by side on it, for callers that separate one song at a time
                (the corpus job's workers, one per core, pass none). The output does not depend on it.
            into: B ``[S, L, 2]`` float32 arrays, views of a track's stems where consecutive
                segments overlap (model.separation.separate_waveform): each segment's signals are
                added to its own, instead of returned (silent segments add nothing).
        Returns:
            ``[B, L, 2, S]`` float32, or None with ``into``.
        """
        spans = np.asarray(spans, np.float32)
        frames = synthesis.audible_frames(spans, self.config)
        audible = frames > 0
        out_shape = (spans.shape[0], self.config.segment_samples, 2, len(self.config.instruments))
        with self._stats_lock:
            self.silent_segments += int((~audible).sum())
            self.model_calls += int(audible.any())
        if not audible.any():
            return None if into is not None else np.zeros(out_shape, np.float32)
        if audible.all():
            return self._once_traced("soft", lambda: self._soft_signals(spans, frames, timings, pool, into))
        if into is not None:
            targets = [target for target, heard in zip(into, audible) if heard]
            return self._once_traced("soft", lambda: self._soft_signals(spans[audible], frames[audible], timings, pool, targets))
        signals = np.zeros(out_shape, np.float32)
        signals[audible] = self._once_traced("soft", lambda: self._soft_signals(spans[audible], frames[audible], timings, pool))
        return signals

    def _once_traced(self, graph: str, call):
        if self._traced[graph]:
            return call()
        with self._lock:
            outputs = call()
            self._traced[graph] = True
            return outputs

    def spectra(self, spans: np.ndarray, timings: dict | None = None):
        """The inputs of the Wiener filter for a batch of segments.

        Args:
            spans: ``[B, L, 2]`` float32 segment samples.
            timings: as in ``soft``.
        Returns:
            ``(STFT [B, T, bins, 2] complex64, source magnitudes [B, T, F, 2, S] float32)``.
        """
        with self._stats_lock:
            self.model_calls += 1

        def call():
            spec, mix = self._timed("stft", timings, self._mwf_analysis, tf.convert_to_tensor(spans, tf.float32))
            return spec, self._timed("unets", timings, self._unets, mix)

        spec, sources = self._once_traced("spectra", call)
        return spec.numpy(), sources.numpy()

    def warm_up(self) -> None:
        """Trace the soft-mask graphs (about half a second), so that calls from several threads
        never trace; TensorFlow optimises them on the first call, which does real work."""
        with self._lock:
            if not self._traced["soft"]:
                self._analysis.get_concrete_function()
                self._unets.get_concrete_function()
                if self._window is None:
                    self._synthesis.get_concrete_function()
                self._traced["soft"] = True
