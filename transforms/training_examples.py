"""MakeExamples: a dataset track -> training examples (mixture and target magnitude segments)."""
from __future__ import annotations

import zlib

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from stembeam.model.config import ModelConfig
from stembeam.model.training import TRAIN, VALIDATION, segment_magnitudes, serialize_example
from stembeam.transforms.dataset import ACCOMPANIMENT, DatasetTrack, load_references, read_signal

ERRORS = "errors"
SUMMARY = "summary"
VALIDATION_SPLITS = ("test", "valid", "validation")


def split_of(track: DatasetTrack) -> str:
    """``validation`` for MUSDB's ``test`` (or a ``valid``) split of the DatasetTrack ``track``; ``train`` for everything else."""
    return VALIDATION if (track.split or "").lower() in VALIDATION_SPLITS else TRAIN


def example_offsets(track_id: str, n_samples: int, config: ModelConfig, seed: int, repeat: int) -> list:
    """Spleeter-style random crops: about one T-frame segment per segment length of audio (times
    ``repeat``), each at a uniformly random start; the same for the same seed and track.

    Args:
        track_id: the track (seeds the crops with ``seed``).
        n_samples: the track's length.
        config: ModelConfig.
        seed: the run's seed.
        repeat: crops per segment length.
    Returns:
        Sorted start samples; each crop is ``[L, 2]``.
    """
    length = config.segment_samples
    count = repeat * max(1, -(-n_samples // (config.T * config.frame_step)))
    rng = np.random.default_rng([seed, zlib.crc32(track_id.encode("utf-8"))])
    return sorted(int(x) for x in rng.integers(0, max(1, n_samples - length + 1), count))


class MakeExamples(beam.DoFn):
    """DatasetTrack -> ``(split, serialized example)``; tagged ``summary``: the track's
    ``{track_id, split, seconds, examples}``; tagged ``errors``: ``(track_id, uri, reason)``.

    Targets are the model's instruments (``accompaniment`` = the sum of the non-vocal stems).
    The mixture is the dataset's, or the sum of the stems with ``mixture_from_stems`` (for
    files whose mixture is not that sum) and always when augmenting. ``augment``: a random
    gain in [0.5, 1.5] per stem and a random left/right swap per example.

    Args:
        config: ModelConfig (instruments, rate, segment length).
        seed: the crops' and augmentations' seed.
        repeat: crops per segment length (example_offsets).
        augment: see above.
        mixture_from_stems: see above.
    """

    def __init__(self, config: ModelConfig, seed: int = 0, repeat: int = 1, augment: bool = False, mixture_from_stems: bool = False):
        self._config = config
        self._seed, self._repeat = seed, repeat
        self._augment, self._from_stems = augment, mixture_from_stems or augment
        self._examples = Metrics.counter("stembeam", "examples_written")
        self._failed = Metrics.counter("stembeam", "tracks_failed")

    def _signals(self, track: DatasetTrack):
        references = load_references(track, self._config.sample_rate)
        missing = [name for name in self._config.instruments if name not in references]
        if missing:
            raise ValueError(f"no {', '.join(missing)} stem (has {sorted(references) or 'none'})")
        derived = ACCOMPANIMENT not in track.stem_signals and ACCOMPANIMENT in references
        stems = {name: signal for name, signal in references.items() if not (derived and name == ACCOMPANIMENT)}
        mixture = None if self._from_stems else read_signal(track.mixture, self._config.sample_rate)
        return stems, mixture

    def _example(self, stems: dict, mixture, offset: int, rng):
        length = self._config.segment_samples
        cut = {name: _crop(signal, offset, length) for name, signal in stems.items()}
        if self._augment:
            swap = rng.random() < 0.5
            cut = {name: (signal[:, ::-1] if swap else signal) * rng.uniform(0.5, 1.5) for name, signal in cut.items()}
        mix = sum(cut.values()) if mixture is None else _crop(mixture, offset, length)
        if ACCOMPANIMENT in self._config.instruments and ACCOMPANIMENT not in cut:
            cut[ACCOMPANIMENT] = sum(signal for name, signal in cut.items() if name != "vocals")
        spans = np.stack([mix] + [cut[name] for name in self._config.instruments]).astype(np.float32)
        if self._config.n_channels == 1:
            # Mono models learn from the channels' mean (a mono file's own samples: decoding duplicates them).
            spans = spans.mean(axis=-1, keepdims=True)
        magnitudes = segment_magnitudes(spans, self._config)
        return magnitudes[0], dict(zip(self._config.instruments, magnitudes[1:]))

    def process(self, track: DatasetTrack):
        split = split_of(track)
        try:
            stems, mixture = self._signals(track)
            n_samples = min(signal.shape[0] for signal in list(stems.values()) + ([] if mixture is None else [mixture]))
            offsets = example_offsets(track.track_id, n_samples, self._config, self._seed, self._repeat)
            rng = np.random.default_rng([self._seed, zlib.crc32(track.track_id.encode("utf-8")), 1])
            examples = [(offset, self._example(stems, mixture, offset, rng)) for offset in offsets]
        except Exception as error:  # noqa: BLE001 - a track that cannot be used is recorded, not a crash
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.mixture.uri, f"{track.mixture.uri}: {error}"))
            return
        for offset, (mix, targets) in examples:
            self._examples.inc()
            yield split, serialize_example(mix, targets, track.track_id, offset)
        seconds = n_samples / self._config.sample_rate
        yield beam.pvalue.TaggedOutput(SUMMARY, {"track_id": track.track_id, "split": split, "seconds": seconds, "examples": len(examples)})


def _crop(signal: np.ndarray, offset: int, length: int) -> np.ndarray:
    """``signal[offset : offset + length]``, zero-padded at the end when the track is shorter."""
    cut = signal[offset : offset + length]
    if cut.shape[0] < length:
        cut = np.pad(cut, ((0, length - cut.shape[0]), (0, 0)))
    return cut
