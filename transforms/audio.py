"""DecodeAndChunk: a Track -> its T-frame segments, or an error, or (already done) its stored rows."""
from __future__ import annotations

import json
import os
import tempfile

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from model.audio import AudioDecodeError, decode_to_file, read_raw
from model.config import ModelConfig
from model.separation import pad_segment, segment_count, segment_start
from transforms import spool, storage
from transforms.records import Chunk, Track

ERRORS = "errors"
DONE = "done"
MARKER = ".stembeam.json"


def track_folder(output: str, track: Track) -> str:
    return storage.join(output, "stems", track.folder_name)


def marker_uri(output: str, track: Track) -> str:
    """The file written last for a finished track: its metadata rows as JSON."""
    return storage.join(track_folder(output, track), MARKER)


class DecodeAndChunk(beam.DoFn):
    """Track -> Chunk per segment; tagged ``errors`` ``(track_id, uri, reason)``; tagged
    ``done``: stored metadata rows of tracks a previous run finished (same source, model, codec
    and filter)."""

    def __init__(self, config: ModelConfig, output: str, model_name: str, codec: str, skip_existing: bool = True, filter_name: str = "soft"):
        self._config = config
        self._filter = filter_name
        self._output = output
        self._model_name = model_name
        self._codec = codec
        self._skip_existing = skip_existing
        self._skipped = Metrics.counter("stembeam", "tracks_skipped")

    def _decode_dir(self):
        """Local outputs decode under ``{output}/_work/`` (cleared by every run, so a killed job
        leaves nothing behind); remote ones in the worker's temporary folder."""
        if not storage.is_local(self._output):
            return None
        folder = storage.local_path(spool.work_root(self._output))
        os.makedirs(folder, exist_ok=True)
        return folder

    def _finished_rows(self, track: Track):
        uri = marker_uri(self._output, track)
        if not self._skip_existing or not FileSystems.exists(uri):
            return None
        stored = json.loads(storage.read_bytes(uri))
        wanted = {"model": self._model_name, "codec": self._codec, "source_uri": track.source_uri, "filter": self._filter}
        if any(stored.get(key) != value for key, value in wanted.items()):
            return None
        return stored["rows"]

    def process(self, track: Track):
        try:
            rows = self._finished_rows(track)
        except Exception:  # noqa: BLE001 - an unreadable marker means: do the track again
            rows = None
        if rows is not None:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(DONE, rows)
            return
        # The track is decoded whole to a local raw file first (memory: one block), so a file
        # that breaks half way is an error row before any of its segments is separated.
        with tempfile.TemporaryDirectory(prefix="stembeam-decode-", dir=self._decode_dir()) as tmp:
            raw = os.path.join(tmp, "decoded.f32")
            try:
                with storage.local_copy(track.source_uri) as path:
                    n_samples = decode_to_file(path, raw, self._config.sample_rate, track.offset, track.duration, track.stream)
            except AudioDecodeError as error:
                yield beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.source_uri, f"{track.source_uri}: {error.reason}"))
                return
            except Exception as error:  # noqa: BLE001 - any unreadable input is a row, not a crash
                yield beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.source_uri, f"{track.source_uri}: {type(error).__name__}: {error}"))
                return
            count = segment_count(n_samples, self._config)
            for index in range(count):
                span = read_raw(raw, segment_start(index, self._config), self._config.segment_samples)
                yield Chunk(track, index, count, n_samples, pad_segment(span, self._config))
