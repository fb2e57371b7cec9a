"""WriteStems (audio files + a per-track marker) and WriteMetadata (Parquet)."""
from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import tempfile

import apache_beam as beam
from apache_beam.metrics import Metrics

from model.audio import CODECS, AudioEncodeError, AudioWriter
from model.config import ModelConfig
from model.separation import OverlapAdd
from transforms import spool, storage
from transforms.audio import marker_uri, read_marker, track_folder
from transforms.records import METADATA_SCHEMA, Track, error_row, metadata_row
from transforms.resume import track_key, with_precision
from transforms.staged import WriteStaged
from transforms.timing import timer

# WriteMetadata's one shard: a new table replaces the old one under the same name.
METADATA_FILE = "tracks-00000-of-00001.parquet"


def rows_to_json(rows) -> list:
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


def rows_from_json(rows) -> list:
    # Markers written before --precision existed hold float32 stems.
    return [{"precision": "float32", **row, "created_at": datetime.datetime.fromisoformat(row["created_at"])} for row in rows]


class WriteStems(beam.DoFn):
    """``(Track, its spooled Chunks in order)`` -> metadata rows, one per stem.

    The segments are overlap-added as they stream from the spool into one AudioWriter per
    stem (memory: one segment), cropped to the track's length. An earlier marker is removed
    before the first stem is replaced, each stem appears under its name only when complete,
    and the track's marker (its resume key and rows) is written last: a marker always means
    every stem of its key is in place. The spool is removed only after the marker, so a retried
    bundle finds either its spool or this run's marker (and then yields the stored rows).

    Only errors of the track's data (non-finite samples, the encoder refusing it) become
    error rows; disk and network failures raise, so the runner retries the bundle.
    """

    def __init__(self, config: ModelConfig, output: str, key: dict, bitrate: str, version: str, run_id: str | None = None):
        self._config = config
        self._output = output
        self._key = key
        self._model_name = key["model"]
        self._codec = key["codec"]
        self._bitrate = bitrate
        self._version = version
        self._run_id = run_id
        self._ok = Metrics.counter("stembeam", "tracks_ok")
        self._failed = Metrics.counter("stembeam", "tracks_failed")
        self._seconds = Metrics.counter("stembeam", "audio_seconds_separated")
        self._read_ms = Metrics.distribution("stembeam", "spool_read_ms")
        self._add_ms = Metrics.distribution("stembeam", "overlap_add_ms")
        self._encode_ms = Metrics.distribution("stembeam", "encode_ms")

    def _stream(self, chunks, writers) -> None:
        adder = OverlapAdd(self._config)
        remaining = chunks[0].n_samples
        for chunk in itertools.chain(chunks, [None]):
            if chunk is None:
                piece = adder.finish()
            else:
                with timer(self._read_ms):
                    signals = spool.read_spool(chunk.spool)
                with timer(self._add_ms):
                    piece = adder.add(signals)
            piece = piece[:remaining]
            remaining -= piece.shape[0]
            with timer(self._encode_ms):
                for k, writer in enumerate(writers.values()):
                    writer.write(piece[..., k])

    def _write(self, track: Track, chunks, key: dict, marker: str, precision: str) -> list:
        folder = track_folder(self._output, track)
        sample_rate = self._config.sample_rate
        uris = {stem: storage.join(folder, f"{stem}.{CODECS[self._codec][0]}") for stem in self._config.instruments}
        writers = {}
        with contextlib.ExitStack() as stack:
            if storage.is_local(folder):
                staging = folder
            else:
                staging = stack.enter_context(tempfile.TemporaryDirectory(prefix="stems-", dir=spool.local_work_dir(self._output, create=True)))
            for stem, uri in uris.items():
                local = uri if storage.is_local(uri) else os.path.join(staging, os.path.basename(uri))
                writers[stem] = AudioWriter(local, sample_rate, self._config.n_channels, self._codec, self._bitrate)
            try:
                self._stream(chunks, writers)
            except BaseException:
                for writer in writers.values():
                    writer.abort()
                raise
            # From here on stems are replaced: the old marker must not vouch for a mix of old and new.
            storage.delete([marker])
            with timer(self._encode_ms):
                for writer in writers.values():
                    writer.close()
                for stem, uri in uris.items():
                    if not storage.is_local(uri):
                        storage.put_file(writers[stem].path, uri)
            # The stems' sizes let a rerun see a stem deleted or truncated since (transforms/audio.py).
            sizes = {os.path.basename(uri): os.path.getsize(writers[stem].path) for stem, uri in uris.items()}
        rows = [
            metadata_row(
                track.track_id, track.source_uri, stem, uri, self._model_name, self._codec, sample_rate,
                self._config.n_channels, writers[stem].frames / sample_rate, writers[stem].rms, writers[stem].peak,
                "ok", None, self._version, precision,
            )
            for stem, uri in uris.items()
        ]
        record = {"key": key, "run_id": self._run_id, "track_id": track.track_id, "rows": rows_to_json(rows), "stem_bytes": sizes}
        storage.write_bytes_atomic(marker, json.dumps(record, ensure_ascii=False).encode("utf-8"))
        return rows

    def process(self, element):
        track, chunks = element
        track: Track
        # What the U-nets ran as, as the inference reported it (segments retried on another kind
        # of worker could differ: then all of them are named).
        precision = "+".join(sorted({chunk.precision or "float32" for chunk in chunks}))
        key = track_key(with_precision(self._key, precision), track, track.source_identity)
        marker = marker_uri(self._output, track)
        stored = read_marker(marker) if self._run_id else None
        if (stored is not None and stored.get("run_id") == self._run_id and stored.get("key") == key
                and stored.get("track_id") == track.track_id):
            # A retried bundle: this run already wrote the track.
            spool.delete_quietly([chunk.spool for chunk in chunks])
            yield from rows_from_json(stored["rows"])
            return
        try:
            rows = self._write(track, chunks, key, marker, precision)
        except (AudioEncodeError, ValueError) as error:
            self._failed.inc()
            spool.delete_quietly([chunk.spool for chunk in chunks])
            yield error_row(track.track_id, track.source_uri, f"{track.source_uri}: writing stems failed: {error}", self._model_name, self._codec,
                            self._version, precision)
            return
        spool.delete_quietly([chunk.spool for chunk in chunks])
        self._ok.inc()
        self._seconds.inc(int(round(chunks[0].n_samples / self._config.sample_rate)))
        yield from rows


class ToErrorRows(beam.DoFn):
    """``(track_id, uri, reason)`` -> an error metadata row."""

    def __init__(self, model_name: str, codec: str, version: str, precision: str | None = None):
        self._model_name, self._codec, self._version, self._precision = model_name, codec, version, precision
        self._failed = Metrics.counter("stembeam", "tracks_failed")

    def process(self, element):
        track_id, uri, reason = element
        self._failed.inc()
        yield error_row(track_id, uri, reason, self._model_name, self._codec, self._version, self._precision)


class WriteMetadata(beam.PTransform):
    """Metadata rows -> ``{output}/metadata/tracks-*.parquet`` with METADATA_SCHEMA: written
    under ``staging`` (storage.staging_folder; never a prefix under the output, see
    transforms/staged.py), then moved into ``metadata/``, replacing the old table."""

    def __init__(self, output: str, staging: str | None = None):
        super().__init__()
        self._output = output
        self._staging = staging or storage.staging_folder(output)

    def expand(self, rows):
        def sink(prefix):
            return beam.io.WriteToParquet(prefix, schema=METADATA_SCHEMA, file_name_suffix=".parquet", num_shards=1, shard_name_template="-SSSSS-of-NNNNN")

        return rows | "WriteParquet" >> WriteStaged(sink, storage.join(self._staging, "metadata"), storage.join(self._output, "metadata"), "tracks")
