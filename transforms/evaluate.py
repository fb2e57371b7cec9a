"""EvaluateTrack: BSS Eval v4 (museval, 1-second windows) of a track's estimates against its stems."""
from __future__ import annotations

import types
from typing import Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from stembeam.transforms.dataset import STEM_NAMES, DatasetTrack, Signal, load_references, read_signal

METRICS = ("SDR", "SIR", "SAR", "ISR")
TRACKS = "tracks"
_LABELS = [("model", pa.string()), ("filter", pa.string())]
WINDOW_SCHEMA = pa.schema(
    [("track_id", pa.string()), ("split", pa.string()), ("stem", pa.string()), ("window", pa.int32()), ("time_s", pa.float64()), ("duration_s", pa.float64())]
    + [(m, pa.float64()) for m in METRICS]
    + _LABELS
)
TRACK_SCHEMA = pa.schema(
    [("track_id", pa.string()), ("split", pa.string()), ("stem", pa.string()), ("windows", pa.int32())]
    + [(m, pa.float64()) for m in METRICS]
    + [("estimate_uri", pa.string()), ("status", pa.string()), ("error", pa.string())]
    + _LABELS
)


def score_track(name: str, references: dict, estimates: dict, sample_rate: int = 44100):
    """museval's own ``eval_mus_track`` (the SiSEC/MUSDB procedure: 1 s windows and hops, vocals and
    accompaniment scored as a pair, other stems jointly) on plain arrays.

    Args:
        name: the track's name.
        references: ``{stem: [samples, 2]}`` true stems.
        estimates: ``{stem: [samples, 2]}`` separated stems, the same stems.
        sample_rate: Hz of both.
    Returns:
        museval.TrackStore.
    """
    import museval

    ordered = [stem for stem in STEM_NAMES if stem in references]
    track = types.SimpleNamespace(
        name=name, rate=sample_rate, subset=None, targets={stem: types.SimpleNamespace(audio=references[stem]) for stem in ordered}
    )
    return museval.eval_mus_track(track, estimates, win=1.0, hop=1.0)


def window_rows(store, track_id: str, split: Optional[str], labels: dict) -> list:
    """One row per stem and window of a museval TrackStore.

    Args:
        store: museval.TrackStore (score_track).
        track_id, split: the track's.
        labels: columns added to every row (model, filter...).
    Returns:
        A list of dicts: SDR, SIR, SAR, ISR per window.
    """
    rows = []
    for target in store.scores["targets"]:
        for index, frame in enumerate(target["frames"]):
            metrics = {m: _finite_or_none(frame["metrics"][m]) for m in METRICS}
            rows.append(
                {"track_id": track_id, "split": split, "stem": target["name"], "window": index, "time_s": float(frame["time"]),
                 "duration_s": float(frame["duration"]), **metrics, **labels}
            )
    return rows


def track_medians(windows: list, labels: dict) -> list:
    """Per-track, per-stem medians over windows (NaN windows, e.g. silent references, left out as
    museval's aggregation does).

    Args:
        windows: window_rows' rows.
        labels: columns added to every row.
    Returns:
        A list of dicts, one per track and stem.
    """
    by_stem = {}
    for row in windows:
        by_stem.setdefault((row["track_id"], row["split"], row["stem"]), []).append(row)
    rows = []
    for (track_id, split, stem), found in by_stem.items():
        medians = {}
        for m in METRICS:
            values = np.array([r[m] for r in found if r[m] is not None], dtype=np.float64)
            medians[m] = float(np.median(values)) if values.size else None
        rows.append(
            {"track_id": track_id, "split": split, "stem": stem, "windows": len(found), **medians, "estimate_uri": None, "status": "ok", "error": None, **labels}
        )
    return rows


def failed_row(track_id: str, split: Optional[str], reason: str, labels: dict) -> dict:
    """The per-track row of a track that could not be scored: ``status`` error, ``error`` the reason, metrics None, with ``labels``."""
    return {
        "track_id": track_id, "split": split, "stem": None, "windows": 0, **{m: None for m in METRICS}, "estimate_uri": None,
        "status": "error", "error": reason, **labels,
    }


def _finite_or_none(value) -> Optional[float]:
    value = float(value) if value is not None else float("nan")
    return value if np.isfinite(value) else None


class EvaluateTrack(beam.DoFn):
    """``(DatasetTrack, {stem: estimate uri})`` -> window rows; tagged ``tracks``: per-track
    median rows, or one error row naming the track and the reason.

    Args:
        labels: columns added to every row (model, filter...).
        sample_rate: the rate references and estimates are decoded at.
    """

    def __init__(self, labels: dict, sample_rate: int = 44100):
        self._labels = labels
        self._sample_rate = sample_rate
        self._ok = Metrics.counter("stembeam", "tracks_evaluated")
        self._failed = Metrics.counter("stembeam", "tracks_not_evaluated")

    def process(self, element):
        track, estimate_uris = element
        track: DatasetTrack
        try:
            references = load_references(track, self._sample_rate)
            scored = sorted(set(estimate_uris) & set(references))
            if not scored:
                raise ValueError(
                    f"no stem to score: estimates {sorted(estimate_uris) or 'none'}, references {sorted(references) or 'none'}"
                )
            estimates = {stem: read_signal(Signal(estimate_uris[stem]), self._sample_rate) for stem in scored}
            store = score_track(track.track_id, {s: references[s] for s in scored}, estimates, self._sample_rate)
            windows = window_rows(store, track.track_id, track.split, self._labels)
            if not windows:
                raise ValueError(f"museval scored nothing for stems {scored} (one stem alone is not scored)")
        except Exception as error:  # noqa: BLE001 - a track that cannot be scored is a row, not a crash
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(TRACKS, failed_row(track.track_id, track.split, f"{track.mixture.uri}: {error}", self._labels))
            return
        self._ok.inc()
        yield from windows
        for row in track_medians(windows, self._labels):
            # Which file was scored (a derived accompaniment has none).
            yield beam.pvalue.TaggedOutput(TRACKS, {**row, "estimate_uri": estimate_uris.get(row["stem"])})

