"""ReadManifest: CSV (with header), JSON Lines or Parquet manifests, local or gs://."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.records import Track, default_track_id

ERRORS = "errors"
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson", ".parquet")


def read_rows(uri: str) -> Iterator[dict]:
    """The rows of a CSV (with header), JSON Lines or Parquet file, as dicts."""
    lower = uri.lower()
    with FileSystems.open(uri) as handle:
        data = handle.read()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(io.BytesIO(data)).to_pylist()
    elif lower.endswith((".jsonl", ".json", ".ndjson")):
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
    else:
        yield from csv.DictReader(io.StringIO(data.decode("utf-8-sig")))


def relative_to(source: str, manifest_uri: str) -> str:
    """A relative path in a manifest is relative to the manifest's folder (not the worker's
    current directory), local or remote."""
    if "://" in source or os.path.isabs(source):
        return source
    if "://" in manifest_uri:
        return manifest_uri.rsplit("/", 1)[0] + "/" + source
    return os.path.join(os.path.dirname(os.path.abspath(manifest_uri)), source)


def _number(value, name, row):
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"manifest row {row}: {name} {value!r} is not a number") from None


class _ParseManifest(beam.DoFn):
    def __init__(self, limit):
        self._limit = limit

    def process(self, uri):
        seen = {}
        for row_number, row in enumerate(read_rows(uri), start=1):
            if self._limit is not None and row_number > self._limit:
                break
            source = row.get("uri") or row.get("path")
            # The default id hashes the resolved uri: "01.flac" of two albums' manifests differ.
            source = relative_to(str(source), uri) if source else None
            track_id = str(row.get("track_id") or "") or (default_track_id(source) if source else f"row-{row_number}")
            if not source:
                yield beam.pvalue.TaggedOutput(ERRORS, (track_id, "", f"manifest row {row_number}: no 'uri' (or 'path') value"))
                continue
            if track_id in seen:
                yield beam.pvalue.TaggedOutput(
                    ERRORS, (track_id, source, f"manifest row {row_number}: duplicate track_id {track_id!r} (first at row {seen[track_id]})")
                )
                continue
            seen[track_id] = row_number
            try:
                offset = _number(row.get("offset"), "offset", row_number) or 0.0
                duration = _number(row.get("duration"), "duration", row_number)
            except ValueError as error:
                yield beam.pvalue.TaggedOutput(ERRORS, (track_id, source, str(error)))
                continue
            yield Track(track_id=track_id, source_uri=source, offset=offset, duration=duration, row=row_number)


class ReadManifest(beam.PTransform):
    """Manifest uri -> PCollection of Track; tagged ``errors``: ``(track_id, uri, reason)``.

    Columns: ``uri`` (alias ``path``) required; ``track_id``, ``offset``, ``duration``
    optional. A repeated track id is an error row; the first occurrence is kept.
    """

    def __init__(self, uri: str, limit: int | None = None):
        super().__init__()
        self._uri = uri
        self._limit = limit

    def expand(self, pbegin):
        parsed = (
            pbegin
            | "ManifestUri" >> beam.Create([self._uri])
            | "ParseRows" >> beam.ParDo(_ParseManifest(self._limit)).with_outputs(ERRORS, main="tracks")
        )
        tracks = parsed.tracks | "Spread" >> beam.Reshuffle()
        return {"tracks": tracks, ERRORS: parsed[ERRORS]}
