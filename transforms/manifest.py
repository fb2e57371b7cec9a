"""ReadManifest: CSV (with header), JSON Lines or Parquet manifests, local or gs://."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Iterator, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from stembeam.transforms.records import Track, default_track_id

ERRORS = "errors"
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".ndjson", ".parquet")
SOURCE_COLUMNS = ("uri", "path")


class ManifestError(Exception):
    """The manifest as a whole cannot be used (missing, unreadable, no uri column)."""


class BadRow:
    """A row that could not be parsed: ``where`` (``line 4`` / ``row 3``) and why."""

    def __init__(self, where: str, reason: str):
        self.where, self.reason = where, reason

    def __repr__(self):
        return f"BadRow({self.where!r}, {self.reason!r})"


def _read(uri: str) -> bytes:
    try:
        with FileSystems.open(uri) as handle:
            return handle.read()
    except Exception as error:  # noqa: BLE001 - FileSystems wraps the cause (BeamIOError, OSError...)
        if not FileSystems.exists(uri):
            raise ManifestError(f"manifest {uri}: not found") from None
        raise ManifestError(f"manifest {uri}: cannot be read: {type(error).__name__}: {error}") from None


def read_entries(uri: str) -> Iterator[tuple]:
    """Read a manifest row by row.

    Args:
        uri: a CSV (with header), JSON Lines or Parquet file, local or remote.
    Returns:
        An iterator of ``(row number, dict | BadRow)``.
    Raises:
        ManifestError: the file as a whole cannot be read.
    """
    lower = uri.lower()
    data = _read(uri)
    if lower.endswith(".parquet"):
        from stembeam.transforms.storage import parquet_from_bytes

        try:
            rows = parquet_from_bytes(data).to_pylist()
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise ManifestError(f"manifest {uri}: not a readable Parquet file: {error}") from None
        yield from enumerate(rows, start=1)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(f"manifest {uri}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        number = 0
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            number += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadRow(f"line {line_number}", f"not valid JSON ({error.msg} at column {error.colno})")
                continue
            yield number, (row if isinstance(row, dict) else BadRow(f"line {line_number}", f"not a JSON object but {type(row).__name__}"))
        return
    yield from _csv_entries(text)


def _csv_entries(text: str) -> Iterator[tuple]:
    reader = csv.reader(io.StringIO(text))
    header, number, line_number = None, 0, 1
    while True:
        start = line_number
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            number += 1
            line_number = reader.line_num + 1
            yield number, BadRow(f"line {start}", f"unreadable CSV ({error})")
            continue
        line_number = reader.line_num + 1
        if header is None:
            header = fields
            continue
        if not fields:
            continue  # a blank line, as csv.DictReader skips it
        number += 1
        if len(fields) != len(header):
            yield number, BadRow(f"line {start}", f"{len(fields)} fields where the header has {len(header)}")
        else:
            yield number, dict(zip(header, fields))


def columns(uri: str) -> Optional[list]:
    """The column names of a CSV or Parquet manifest at ``uri`` (None for JSON Lines: each row has its own)."""
    lower = uri.lower()
    if lower.endswith(".parquet"):
        import pyarrow.parquet as pq

        data = _read(uri)
        try:
            return list(pq.read_schema(io.BytesIO(data)).names)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several types for a broken file
            raise ManifestError(f"manifest {uri}: not a readable Parquet file: {error}") from None
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return None
    first = _read(uri).decode("utf-8-sig", errors="replace").splitlines()
    return next(csv.reader(first[:1]), []) if first else []


def read_rows(uri: str) -> Iterator[dict]:
    """The rows of a CSV (with header), JSON Lines or Parquet file at ``uri``, as dicts.

    Raises:
        ValueError naming the line of a malformed row; ManifestError for the file as a whole.
    """
    for _, row in read_entries(uri):
        if isinstance(row, BadRow):
            raise ValueError(f"{uri}: {row.where}: {row.reason}")
        yield row


def relative_to(source: str, manifest_uri: str) -> str:
    """Resolve a manifest's path: a relative one is relative to the manifest's folder (not the
    worker's current directory), local or remote.

    Args:
        source: the path as the row gives it.
        manifest_uri: the manifest's uri.
    Returns:
        The source's uri.
    """
    if "://" in source or os.path.isabs(source):
        return source
    if "://" in manifest_uri:
        return manifest_uri.rsplit("/", 1)[0] + "/" + source
    return os.path.join(os.path.dirname(os.path.abspath(manifest_uri)), source)


def _number(value, name, row):
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise ValueError(f"manifest row {row}: {name} {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"manifest row {row}: {name} {value!r} is not a number") from None


def _text(value, name, row):
    """A uri or track id value: text (a number is taken as its text; a list, a map or a bool is an error)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"manifest row {row}: {name} {value!r} is {type(value).__name__}, not text")


def check_manifest(uri: str) -> None:
    """Check a manifest as a whole (the rows themselves are checked one by one).

    Args:
        uri: the manifest.
    Raises:
        ManifestError (one line naming the manifest and the reason): missing, unreadable or no
        ``uri``/``path`` column.
    """
    if not uri.lower().endswith(MANIFEST_SUFFIXES):
        raise ManifestError(f"manifest {uri}: unknown format (expected {', '.join(MANIFEST_SUFFIXES)})")
    names = columns(uri)
    if names is not None:
        if names and not any(c in names for c in SOURCE_COLUMNS):
            raise ManifestError(f"manifest {uri}: no 'uri' (or 'path') column (columns: {', '.join(names) or 'none'})")
        return
    rows = [row for _, row in read_entries(uri) if isinstance(row, dict)]
    if rows and not any(c in row for row in rows for c in SOURCE_COLUMNS):
        raise ManifestError(f"manifest {uri}: no row has a 'uri' (or 'path') key")


def parse_manifest(uri: str, limit: Optional[int] = None) -> Iterator:
    """The tracks of a manifest.

    Args:
        uri: the manifest.
        limit: at most this many rows (None: all).
    Returns:
        An iterator of Track, and ``(track_id, uri, reason)`` for each row that cannot be one
        (malformed, no uri, duplicate id, bad offset/duration).
    """
    seen = {}
    for row_number, row in read_entries(uri):
        if limit is not None and row_number > limit:
            break
        if isinstance(row, BadRow):
            yield (row.where.replace(" ", "-"), "", f"manifest {row.where}: {row.reason}")
            continue
        try:
            source = _text(row.get("uri"), "uri", row_number) or _text(row.get("path"), "path", row_number)
            track_id = _text(row.get("track_id"), "track_id", row_number) or ""
        except ValueError as error:
            yield (f"row-{row_number}", "", str(error))
            continue
        # The default id hashes the resolved uri: "01.flac" of two albums' manifests differ.
        source = relative_to(source, uri) if source else None
        track_id = track_id or (default_track_id(source) if source else f"row-{row_number}")
        if not source:
            yield (track_id, "", f"manifest row {row_number}: no 'uri' (or 'path') value")
            continue
        if track_id in seen:
            yield (track_id, source, f"manifest row {row_number}: duplicate track_id {track_id!r} (first at row {seen[track_id]})")
            continue
        seen[track_id] = row_number
        try:
            offset = _number(row.get("offset"), "offset", row_number) or 0.0
            duration = _number(row.get("duration"), "duration", row_number)
        except ValueError as error:
            yield (track_id, source, str(error))
            continue
        yield Track(track_id=track_id, source_uri=source, offset=offset, duration=duration, row=row_number)


class _ParseManifest(beam.DoFn):
    def __init__(self, limit):
        self._limit = limit

    def process(self, uri):
        for item in parse_manifest(uri, self._limit):
            yield item if isinstance(item, Track) else beam.pvalue.TaggedOutput(ERRORS, item)


class ReadManifest(beam.PTransform):
    """Manifest uri -> PCollection of Track; tagged ``errors``: ``(track_id, uri, reason)``.

    Columns: ``uri`` (alias ``path``) required; ``track_id``, ``offset``, ``duration``
    optional. A repeated track id is an error row; the first occurrence is kept. A malformed
    row (bad JSON line, CSV line with the wrong number of fields, value of the wrong type) is
    an error row naming its line.

    Args:
        uri: the manifest (CSV, JSON Lines or Parquet).
        limit: at most this many rows (None: all).
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
