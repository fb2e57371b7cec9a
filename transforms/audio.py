"""DecodeAndChunk: a Track -> its T-frame segments, or an error, or (already done) its stored rows."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from stembeam.model.audio import AudioDecodeError, decode_to_file, read_raw
from stembeam.model.config import ModelConfig
from stembeam.model.separation import pad_segment, segment_count, segment_start
from stembeam.transforms import storage, workspace
from stembeam.transforms.records import Chunk, Track
from stembeam.transforms.timing import timer
from stembeam.transforms.resume import changed_fields, key_run_here, source_identity, track_key

LOGGER = logging.getLogger("stembeam.pipeline")

ERRORS = "errors"
DONE = "done"
DECODED = "decoded"
MARKER = ".stembeam.json"


def track_folder(output: str, track: Track) -> str:
    return storage.join(output, "stems", track.folder_name)


def marker_uri(output: str, track: Track) -> str:
    """The file written last for a finished track: its metadata rows as JSON."""
    return storage.join(track_folder(output, track), MARKER)


def read_marker(uri: str) -> dict | None:
    """A finished track's marker, or None when it is missing or unreadable."""
    try:
        return json.loads(storage.read_bytes(uri))
    except Exception:  # noqa: BLE001 - a missing or broken marker vouches for nothing
        return None


def missing_stems(stored: dict, folder: str) -> list:
    """The stem files of a marker's rows that are gone from the track's ``folder`` or (markers
    that record sizes) no longer have the size written: a marker vouches for a track only while
    all its stems are there."""
    sizes = stored.get("stem_bytes") or {}
    missing = []
    for row in stored.get("rows", []):
        if not row.get("stem_uri"):
            continue
        name = row["stem_uri"].rstrip("/").rsplit("/", 1)[-1]
        uri = storage.join(folder, name)
        try:
            # Stat the path itself: FileSystems.match would read brackets in it as a pattern.
            size = FileSystems.get_filesystem(uri).metadata(uri).size_in_bytes
        except Exception:  # noqa: BLE001 - missing or unreadable: the stem is not there
            missing.append(name)
            continue
        if name in sizes and sizes[name] != size:
            missing.append(name)
    return missing


class DecodeAndChunk(beam.DoFn):
    """Track -> Chunk per segment, all from one call (so a track's segments stay in one bundle,
    in order: transforms/write.py WriteStems); tagged ``errors`` ``(track_id, uri, reason)``;
    tagged ``decoded``: ``(track_id, seconds)`` once the track's length is known; tagged
    ``done``: stored metadata rows of tracks a previous run finished with the same resume key
    (transforms.resume: model and weights, output options, filter, span and source file), or
    that this run (``run_id``) already wrote, when a bundle is retried."""

    def __init__(self, config: ModelConfig, output: str, key: dict, skip_existing: bool = True, run_id: str | None = None):
        self._config = config
        self._output = output
        self._key = key
        self._skip_existing = skip_existing
        self._run_id = run_id
        self._skipped = Metrics.counter("stembeam", "tracks_skipped")
        self._decode_ms = Metrics.distribution("stembeam", "decode_ms")

    def _decode_dir(self):
        """Local work space that the next run on the output sweeps (a killed job leaves
        nothing behind), also for remote outputs."""
        return workspace.local_work_dir(self._output, create=True)

    def _finished_rows(self, track: Track):
        stored = read_marker(marker_uri(self._output, track))
        if stored is None:
            return None
        if not self._skip_existing and not (self._run_id and stored.get("run_id") == self._run_id):
            return None
        if stored.get("track_id") != track.track_id:
            # The folder once held another id's track (ids that changed between runs).
            LOGGER.info("%s: separated again, its folder's marker is of track %r", track.track_id, stored.get("track_id"))
            return None
        # The precision this worker runs (a bfloat16 request on a CPU without it runs float32).
        wanted = track_key(key_run_here(self._key), track, track.source_identity)
        changed = changed_fields(stored.get("key"), wanted)
        if changed:
            LOGGER.info("%s: separated again, its marker differs in %s", track.track_id, ", ".join(changed))
            return None
        missing = missing_stems(stored, track_folder(self._output, track))
        if missing:
            LOGGER.info("%s: separated again, its stems are missing or changed: %s", track.track_id, ", ".join(missing))
            return None
        return stored["rows"]

    def process(self, track: Track):
        try:
            track = dataclasses.replace(track, source_identity=source_identity(track.source_uri))
        except Exception:  # noqa: BLE001 - a missing source: decoding below names the reason
            pass
        rows = self._finished_rows(track)
        if rows is not None:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(DONE, rows)
            return
        # The track is decoded whole to a local raw file first (memory: one block), so a file
        # that breaks half way is an error row before any of its segments is separated.
        with tempfile.TemporaryDirectory(prefix="stembeam-decode-", dir=self._decode_dir()) as tmp:
            raw = os.path.join(tmp, "decoded.f32")
            try:
                with storage.local_copy(track.source_uri) as path, timer(self._decode_ms):
                    n_samples = decode_to_file(path, raw, self._config.sample_rate, track.offset, track.duration, track.stream)
            except AudioDecodeError as error:
                yield beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.source_uri, f"{track.source_uri}: {error.reason}"))
                return
            except Exception as error:  # noqa: BLE001 - any unreadable input is a row, not a crash
                yield beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.source_uri, f"{track.source_uri}: {type(error).__name__}: {error}"))
                return
            count = segment_count(n_samples, self._config)
            yield beam.pvalue.TaggedOutput(DECODED, (track.track_id, n_samples / self._config.sample_rate))
            for index in range(count):
                start = time.perf_counter()
                span = pad_segment(read_raw(raw, segment_start(index, self._config), self._config.segment_samples), self._config)
                self._decode_ms.update(int(round(1000 * (time.perf_counter() - start))))
                yield Chunk(track, index, count, n_samples, span)
