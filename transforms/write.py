"""WriteStems (audio files + a per-track marker) and WriteMetadata (Parquet)."""
from __future__ import annotations

import datetime
import json
import os
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from model.audio import CODECS, write_audio
from transforms import storage
from transforms.audio import marker_uri, track_folder
from transforms.records import METADATA_SCHEMA, Track, error_row, metadata_row


def rows_to_json(rows) -> list:
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


def rows_from_json(rows) -> list:
    return [{**row, "created_at": datetime.datetime.fromisoformat(row["created_at"])} for row in rows]


class WriteStems(beam.DoFn):
    """``(Track, {instrument: [n, 2]})`` -> metadata rows, one per stem.

    Each stem is written under a temporary name and renamed; the track's marker
    (its rows as JSON) is written last, so a marker means every stem is complete.
    """

    def __init__(self, output: str, model_name: str, codec: str, bitrate: str, sample_rate: int, version: str):
        self._output = output
        self._model_name = model_name
        self._codec = codec
        self._bitrate = bitrate
        self._sample_rate = sample_rate
        self._version = version
        self._ok = Metrics.counter("stembeam", "tracks_ok")
        self._failed = Metrics.counter("stembeam", "tracks_failed")
        self._seconds = Metrics.counter("stembeam", "audio_seconds_separated")

    def _write(self, uri: str, signal: np.ndarray) -> None:
        if storage.is_local(uri):
            write_audio(uri, signal, self._sample_rate, self._codec, self._bitrate)
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, os.path.basename(uri))
            write_audio(local, signal, self._sample_rate, self._codec, self._bitrate)
            storage.put_file(local, uri)

    def process(self, element):
        track, stems = element
        track: Track
        folder = track_folder(self._output, track)
        rows = []
        try:
            for stem, signal in stems.items():
                uri = storage.join(folder, f"{stem}.{CODECS[self._codec][0]}")
                self._write(uri, signal)
                rows.append(
                    metadata_row(
                        track.track_id, track.source_uri, stem, uri, self._model_name, self._codec, self._sample_rate,
                        signal.shape[1], signal.shape[0] / self._sample_rate, float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))),
                        float(np.max(np.abs(signal))), "ok", None, self._version,
                    )
                )
            marker = {"model": self._model_name, "codec": self._codec, "source_uri": track.source_uri, "rows": rows_to_json(rows)}
            storage.write_bytes_atomic(marker_uri(self._output, track), json.dumps(marker, ensure_ascii=False).encode("utf-8"))
        except Exception as error:  # noqa: BLE001 - recorded as the track's error row
            self._failed.inc()
            yield error_row(track.track_id, track.source_uri, f"{track.source_uri}: writing stems failed: {error}", self._model_name, self._codec, self._version)
            return
        self._ok.inc()
        self._seconds.inc(int(round(next(iter(stems.values())).shape[0] / self._sample_rate)))
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
