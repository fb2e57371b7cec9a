"""RegroupTracks: per-segment parts of each track -> the track's full-length stems."""
from __future__ import annotations

import apache_beam as beam
import numpy as np

from model import spectral
from model.config import ModelConfig
from model.separation import overlap_add_segments, wiener_filter

ERRORS = "errors"


def _soft_mask_track(parts, config: ModelConfig, n_samples: int) -> np.ndarray:
    return overlap_add_segments((signal for _, signal in parts), config, n_samples)


def _wiener_track(parts, config: ModelConfig, n_samples: int) -> np.ndarray:
    advance = config.T * config.frame_step
    # Each segment's first T*hop samples tile the track; the last one also brings its tail.
    waveform = np.concatenate([span[:advance] for _, (_, span) in parts[:-1]] + [parts[-1][1][1]])[:n_samples]
    mix = spectral.stft(waveform, config.frame_length, config.frame_step)
    sources = np.concatenate([s for _, (s, _) in parts])[: mix.shape[0]]
    estimates = wiener_filter(sources, mix, config)
    return np.stack(
        [spectral.istft(estimates[..., k], config.frame_length, config.frame_step)[:n_samples] for k in range(estimates.shape[-1])],
        axis=-1,
    )


class _Assemble(beam.DoFn):
    def __init__(self, config: ModelConfig, mwf: bool):
        self._config = config
        self._mwf = mwf

    def process(self, element):
        track_id, parts = element
        parts = sorted(parts, key=lambda part: part[0].index)
        track = parts[0][0].track
        try:
            indices = [info.index for info, _ in parts]
            if indices != list(range(parts[0][0].count)):
                raise RuntimeError(f"segments {indices} of {parts[0][0].count} arrived")
            n_samples = parts[0][0].n_samples
            assemble = _wiener_track if self._mwf else _soft_mask_track
            signals = assemble(parts, self._config, n_samples)
        except Exception as error:  # noqa: BLE001 - recorded as the track's error row
            yield beam.pvalue.TaggedOutput(ERRORS, (track_id, track.source_uri, f"{track.source_uri}: regrouping failed: {error}"))
            return
        yield track, {name: np.ascontiguousarray(signals[..., k]) for k, name in enumerate(self._config.instruments)}


class RegroupTracks(beam.PTransform):
    """``(track_id, (Chunk, part))`` -> ``(Track, {instrument: [n, 2]})``; tagged ``errors``."""

    def __init__(self, config: ModelConfig, mwf: bool = False):
        super().__init__()
        self._config = config
        self._mwf = mwf

    def expand(self, parts):
        return (
            parts
            | "GroupByTrack" >> beam.GroupByKey()
            | "Assemble" >> beam.ParDo(_Assemble(self._config, self._mwf)).with_outputs(ERRORS, main="stems")
        )
