"""ReadDataset: datasets with ground-truth stems (MUSDB folders, ``.stem.mp4`` files, manifests).

Layouts, local or gs://:
- a folder of track folders ``<track>/{mixture,vocals,drums,bass,other,...}.{wav,flac,...}``,
  optionally one level down under splits (``train/<track>/...``, ``test/<track>/...``);
- native MUSDB ``.stem.mp4`` files (in the folder or its split folders): audio stream 0 is the
  mixture, then drums, bass, other, vocals;
- a manifest (CSV / JSON Lines / Parquet): ``uri`` (alias ``path`` or ``mixture``), optional
  ``track_id`` and ``split``, and one column per stem holding its file's uri (a ``.stem.mp4``
  mixture with no stem columns takes its stems from its streams);
- Spleeter's dataset CSV: ``mix_path`` (``<mix_name>_path``), ``<instrument>_path`` for any
  instrument name, ``duration`` (not used).

Relative paths are relative to ``root`` when given (Spleeter's ``-d`` folder), else to the
manifest's folder.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
from typing import Iterator, Optional

import apache_beam as beam
import numpy as np

from stembeam.model.decode import load_audio
from stembeam.transforms import storage
from stembeam.transforms.manifest import MANIFEST_SUFFIXES, read_rows, relative_to
from stembeam.transforms.records import Track

ERRORS = "errors"
MIXTURE = "mixture"
ACCOMPANIMENT = "accompaniment"
# Every stem name a Spleeter model or a MUSDB-like dataset uses.
STEM_NAMES = ("vocals", "drums", "bass", "other", "piano", ACCOMPANIMENT)
# Stream order of MUSDB's native stems files (Native Instruments' stems format).
STEM_MP4_STREAMS = (("drums", 1), ("bass", 2), ("other", 3), ("vocals", 4))
STEM_MP4 = ".stem.mp4"


@dataclasses.dataclass(frozen=True)
class Signal:
    """An audio signal: a file, or one audio ``stream`` of a multi-stream file.

    Attributes:
        uri: the file (local or remote).
        stream: the audio stream's index, or None.
    """

    uri: str
    stream: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class DatasetTrack:
    """A mixture and its ground-truth stems ``((name, Signal), ...)``.

    Attributes:
        track_id: the track's id.
        mixture: Signal.
        stems: ``((name, Signal), ...)``.
        split: ``train``, ``test``, ``valid``... or None.
    """

    track_id: str
    mixture: Signal
    stems: tuple
    split: Optional[str] = None

    def track(self) -> Track:
        """The mixture as the pipeline's Track."""
        return Track(self.track_id, self.mixture.uri, stream=self.mixture.stream)

    @property
    def stem_signals(self) -> dict:
        """``{stem: Signal}`` of the true stems."""
        return dict(self.stems)


def _name(uri: str) -> str:
    return posixpath.basename(uri.rstrip("/"))


def _parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0]


def _stem_mp4_track(uri: str, split: Optional[str]) -> DatasetTrack:
    track_id = _name(uri)[: -len(STEM_MP4)]
    return DatasetTrack(track_id, Signal(uri, 0), tuple((name, Signal(uri, k)) for name, k in STEM_MP4_STREAMS), split)


def stem_candidates(folder: str) -> dict:
    """The files in a folder named after a stem (``vocals.wav``, ``vocals.mp3``, ...); hidden files
    (``.tmp-*``) never match.

    Args:
        folder: a local or remote folder (taken literally).
    Returns:
        ``{stem: [uri, ...]}``, each list sorted.
    """
    found = {}
    for uri in storage.list_matching(folder, "*"):
        base = _name(uri).split(".", 1)[0]
        if base in STEM_NAMES:
            found.setdefault(base, []).append(uri)
    return found


def stem_files(folder: str) -> dict:
    """``{stem: uri}``: the first of each stem's files in ``folder`` (see stem_candidates)."""
    return {stem: uris[0] for stem, uris in stem_candidates(folder).items()}


def _folder_track(mixture_uri: str, split: Optional[str]) -> DatasetTrack:
    folder = _parent(mixture_uri)
    stems = tuple(sorted((name, Signal(uri)) for name, uri in stem_files(folder).items()))
    return DatasetTrack(_name(folder), Signal(mixture_uri), stems, split)


def _folder_tracks(root: str) -> Iterator[DatasetTrack]:
    """Tracks at the root, then under each split folder (one level down)."""
    for depth in (0, 1):
        stars = ["*"] * depth
        for mixture in storage.list_matching(root, *stars, "*", MIXTURE + ".*"):
            split = _name(_parent(_parent(mixture))) if depth else None
            yield _folder_track(mixture, split)
        for stem_file in storage.list_matching(root, *stars, "*" + STEM_MP4):
            yield _stem_mp4_track(stem_file, _name(_parent(stem_file)) if depth else None)


SPLEETER_PATH_SUFFIX = "_path"


def _spleeter_row(row: dict, mix_name: str):
    """``(mixture, {stem: path})`` of a row of Spleeter's dataset CSV, else None."""
    mix_keys = (mix_name + SPLEETER_PATH_SUFFIX, MIXTURE + SPLEETER_PATH_SUFFIX)
    if not any(key in row for key in mix_keys):
        return None
    mixture = next((row[key] for key in mix_keys if row.get(key)), None)
    stems = {
        key[: -len(SPLEETER_PATH_SUFFIX)]: value
        for key, value in row.items()
        if key.endswith(SPLEETER_PATH_SUFFIX) and key not in mix_keys and value
    }
    return mixture, stems


def _manifest_tracks(uri: str, root: Optional[str] = None, mix_name: str = "mix") -> Iterator:
    anchor = root.rstrip("/") + "/_" if root else uri  # relative_to resolves against the anchor's folder
    for row_number, row in enumerate(read_rows(uri), start=1):
        spleeter = _spleeter_row(row, mix_name)
        source = spleeter[0] if spleeter else row.get("uri") or row.get("path") or row.get(MIXTURE)
        if not source:
            yield ("row-%d" % row_number, "", f"manifest row {row_number}: no 'uri' (or 'path', 'mixture', '{mix_name}_path') value")
            continue
        source = relative_to(str(source), anchor)
        if spleeter:
            stems = tuple(sorted((name, Signal(relative_to(str(path), anchor))) for name, path in spleeter[1].items()))
        else:
            stems = tuple(sorted((name, Signal(relative_to(str(row[name]), anchor))) for name in STEM_NAMES if row.get(name)))
        split = str(row["split"]) if row.get("split") else None
        if not stems and source.endswith(STEM_MP4):
            found = _stem_mp4_track(source, split)
            yield dataclasses.replace(found, track_id=str(row.get("track_id") or found.track_id))
            continue
        track_id = str(row.get("track_id") or "")
        if not track_id:
            # MUSDB-style rows point at <track>/mixture.wav (Spleeter's at <track>/mix.wav): the folder names the track.
            named_by_folder = _name(source).startswith((MIXTURE + ".", mix_name + "."))
            track_id = _name(_parent(source)) if named_by_folder else os.path.splitext(_name(source))[0]
        yield DatasetTrack(track_id, Signal(source), stems, split)


def list_dataset(dataset: str, split: Optional[str] = None, root: Optional[str] = None, mix_name: str = "mix") -> Iterator:
    """List a dataset's tracks.

    Args:
        dataset: a folder (a subfolder per track, MUSDB's layout) or a manifest.
        split: None keeps the ``test`` split when the dataset has one (MUSDB's scores are on
            its test set) and everything otherwise; ``"all"`` keeps every track; any other name
            keeps that split.
        root: the folder a manifest's relative paths start from (default: the manifest's folder).
        mix_name: the mixture's column prefix in a Spleeter dataset CSV (``<mix_name>_path``).
    Returns:
        An iterator of DatasetTrack, and ``(track_id, uri, reason)`` for what cannot be used.
    """
    if dataset.lower().endswith(MANIFEST_SUFFIXES):
        found = list(_manifest_tracks(dataset, root, mix_name))
    else:
        found = list(_folder_tracks(dataset))
        if not found:
            yield ("", dataset, f"{dataset}: no tracks found (expected <track>/mixture.* folders or *.stem.mp4 files, optionally under split folders)")
            return
    tracks = [t for t in found if isinstance(t, DatasetTrack)]
    splits = {t.split for t in tracks}
    wanted = split if split is not None else ("test" if "test" in splits else "all")
    seen = {}
    for item in found:
        if not isinstance(item, DatasetTrack):
            yield item
            continue
        if wanted != "all" and item.split != wanted:
            continue
        if item.track_id in seen:
            yield (item.track_id, item.mixture.uri, f"{item.mixture.uri}: duplicate track_id {item.track_id!r} (first: {seen[item.track_id]})")
            continue
        seen[item.track_id] = item.mixture.uri
        yield item


class _ListDataset(beam.DoFn):
    def __init__(self, split, limit, root=None, mix_name="mix"):
        self._split, self._limit, self._root, self._mix_name = split, limit, root, mix_name

    def process(self, dataset):
        kept = 0
        for item in list_dataset(dataset, self._split, self._root, self._mix_name):
            if isinstance(item, DatasetTrack):
                kept += 1
                if self._limit is not None and kept > self._limit:
                    continue
                yield item
            else:
                yield beam.pvalue.TaggedOutput(ERRORS, item)


class ReadDataset(beam.PTransform):
    """Dataset uri -> PCollection of DatasetTrack; tagged ``errors``: ``(track_id, uri, reason)``.

    Args:
        dataset, split, root, mix_name: as list_dataset.
        limit: at most this many tracks (None: all).
    """

    def __init__(self, dataset: str, split: Optional[str] = None, limit: Optional[int] = None, root: Optional[str] = None, mix_name: str = "mix"):
        super().__init__()
        self._dataset, self._split, self._limit = dataset, split, limit
        self._root, self._mix_name = root, mix_name

    def expand(self, pbegin):
        listed = (
            pbegin
            | "DatasetUri" >> beam.Create([self._dataset])
            | "ListTracks" >> beam.ParDo(_ListDataset(self._split, self._limit, self._root, self._mix_name)).with_outputs(ERRORS, main="tracks")
        )
        return {"tracks": listed.tracks | "Spread" >> beam.Reshuffle(), ERRORS: listed[ERRORS]}


def read_signal(signal: Signal, sample_rate: int = 44100) -> np.ndarray:
    """Decode a Signal (local or remote) at ``sample_rate``.

    Returns:
        ``[samples, 2]`` float64.
    Raises:
        AudioDecodeError naming the file.
    """
    with storage.local_copy(signal.uri) as path:
        return load_audio(path, sample_rate, stream=signal.stream).astype(np.float64)


def load_references(track: DatasetTrack, sample_rate: int = 44100) -> dict:
    """The track's true stems, plus ``accompaniment`` = the sum of its non-vocal stems when it has
    vocals and no accompaniment file (MUSDB's convention).

    Args:
        track: DatasetTrack.
        sample_rate: the rate to decode to.
    Returns:
        ``{stem: [samples, 2] float64}``.
    """
    references = {name: read_signal(signal, sample_rate) for name, signal in track.stems}
    others = [signal for name, signal in references.items() if name not in ("vocals", ACCOMPANIMENT)]
    if "vocals" in references and ACCOMPANIMENT not in references and others:
        length = min(signal.shape[0] for signal in others)
        references[ACCOMPANIMENT] = np.sum([signal[:length] for signal in others], axis=0)
    return references
