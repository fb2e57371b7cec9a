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

from model.audio import CODECS, AudioWriter
from model.config import ModelConfig
from model.separation import OverlapAdd
from transforms import spool, storage
from transforms.audio import marker_uri, track_folder
from transforms.records import METADATA_SCHEMA, Track, error_row, metadata_row


def rows_to_json(rows) -> list:
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


def rows_from_json(rows) -> list:
    return [{**row, "created_at": datetime.datetime.fromisoformat(row["created_at"])} for row in rows]


class WriteStems(beam.DoFn):
    """``(Track, its spooled Chunks in order)`` -> metadata rows, one per stem.

    The segments are overlap-added as they stream from the spool into one AudioWriter per
    stem (memory: one segment), cropped to the track's length. Each stem appears under its
    name only when complete; the track's marker (its rows as JSON) is written last, so a
    marker means every stem is complete. The track's spool is removed afterwards.
    """

    def __init__(self, config: ModelConfig, output: str, model_name: str, codec: str, bitrate: str, version: str, filter_name: str = "soft"):
        self._config = config
        self._filter = filter_name
        self._output = output
        self._model_name = model_name
        self._codec = codec
        self._bitrate = bitrate
        self._version = version
        self._ok = Metrics.counter("stembeam", "tracks_ok")
        self._failed = Metrics.counter("stembeam", "tracks_failed")
        self._seconds = Metrics.counter("stembeam", "audio_seconds_separated")

    def _stream(self, chunks, writers) -> None:
        adder = OverlapAdd(self._config)
        remaining = chunks[0].n_samples
        pieces = (adder.add(spool.read_spool(chunk.spool)) for chunk in chunks)
        for piece in itertools.chain(pieces, [None]):
            piece = adder.finish() if piece is None else piece
            piece = piece[:remaining]
            remaining -= piece.shape[0]
            for k, writer in enumerate(writers.values()):
                writer.write(piece[..., k])

    def process(self, element):
        track, chunks = element
        track: Track
        folder = track_folder(self._output, track)
        sample_rate = self._config.sample_rate
        uris = {stem: storage.join(folder, f"{stem}.{CODECS[self._codec][0]}") for stem in self._config.instruments}
        writers = {}
        try:
            with contextlib.ExitStack() as stack:
                staging = folder if storage.is_local(folder) else stack.enter_context(tempfile.TemporaryDirectory())
                for stem, uri in uris.items():
                    local = uri if storage.is_local(uri) else os.path.join(staging, os.path.basename(uri))
                    writers[stem] = AudioWriter(local, sample_rate, self._config.n_channels, self._codec, self._bitrate)
                try:
                    self._stream(chunks, writers)
                except BaseException:
                    for writer in writers.values():
                        writer.abort()
                    raise
                for writer in writers.values():
                    writer.close()
                for stem, uri in uris.items():
                    if not storage.is_local(uri):
                        storage.put_file(writers[stem].path, uri)
            rows = [
                metadata_row(
                    track.track_id, track.source_uri, stem, uri, self._model_name, self._codec, sample_rate,
                    self._config.n_channels, writers[stem].frames / sample_rate, writers[stem].rms, writers[stem].peak,
                    "ok", None, self._version,
                )
                for stem, uri in uris.items()
            ]
            marker = {
                "model": self._model_name, "codec": self._codec, "source_uri": track.source_uri, "filter": self._filter, "rows": rows_to_json(rows)
            }
            storage.write_bytes_atomic(marker_uri(self._output, track), json.dumps(marker, ensure_ascii=False).encode("utf-8"))
        except Exception as error:  # noqa: BLE001 - recorded as the track's error row
            self._failed.inc()
            yield error_row(track.track_id, track.source_uri, f"{track.source_uri}: writing stems failed: {error}", self._model_name, self._codec, self._version)
            return
        finally:
            spool.delete_quietly([chunk.spool for chunk in chunks])
        self._ok.inc()
        self._seconds.inc(int(round(chunks[0].n_samples / sample_rate)))
        yield from rows


class ToErrorRows(beam.DoFn):
    """``(track_id, uri, reason)`` -> an error metadata row."""

    def __init__(self, model_name: str, codec: str, version: str):
        self._model_name, self._codec, self._version = model_name, codec, version
        self._failed = Metrics.counter("stembeam", "tracks_failed")

    def process(self, element):
        track_id, uri, reason = element
        self._failed.inc()
        yield error_row(track_id, uri, reason, self._model_name, self._codec, self._version)


class WriteMetadata(beam.PTransform):
    """Metadata rows -> ``{output}/metadata/tracks-*.parquet`` with METADATA_SCHEMA."""

    def __init__(self, output: str):
        super().__init__()
        self._output = output

    def expand(self, rows):
        return rows | "WriteParquet" >> beam.io.WriteToParquet(
            storage.join(self._output, "metadata", "tracks"),
            schema=METADATA_SCHEMA,
            file_name_suffix=".parquet",
            num_shards=1,
        )
