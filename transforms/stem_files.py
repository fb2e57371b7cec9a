"""Where a run's stems go and what vouches for them: the StemFiles settings, a track's folder,
and its marker (``.stembeam.json``, written last: the track's resume key, rows and stem sizes)."""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Optional

from apache_beam.io.filesystems import FileSystems

from stembeam.transforms import storage
from stembeam.transforms.records import Track

MARKER = ".stembeam.json"


@dataclasses.dataclass(frozen=True)
class StemFiles:
    """How a run writes stems (frozen).

    Attributes:
        output: the output folder.
        key: the job's resume key (transforms.resume.job_key; its codec among the rest).
        bitrate: lossy codecs' bitrate.
        bit_depth: the files' bit depth (None: the codec's default).
        version: stembeam's version, for the rows.
        run_id: this run's id (None: a dry run).
        skip_existing: keep tracks an earlier run finished.
    """

    output: str
    key: dict
    bitrate: str = "128k"
    bit_depth: Optional[int] = None
    version: str = ""
    run_id: Optional[str] = None
    skip_existing: bool = True

    @property
    def codec(self) -> str:
        """The stems' codec (the key's ``codec``)."""
        return self.key["codec"]


def track_folder(output: str, track: Track) -> str:
    """The folder of ``track``'s stems under ``output``."""
    return storage.join(output, "stems", track.folder_name)


def marker_uri(output: str, track: Track) -> str:
    """The file written last for a finished track: its metadata rows as JSON."""
    return storage.join(track_folder(output, track), MARKER)


def read_marker(uri: str) -> Optional[dict]:
    """A finished track's marker, or None when it is missing or unreadable."""
    try:
        return json.loads(storage.read_bytes(uri))
    except Exception:  # noqa: BLE001 - a missing or broken marker vouches for nothing
        return None


def stem_names(stored: dict) -> list:
    """The stem file names a marker's rows list."""
    return [row["stem_uri"].rstrip("/").rsplit("/", 1)[-1] for row in stored.get("rows", []) if row.get("stem_uri")]


def missing_stems(stored: dict, folder: str) -> list:
    """The stem files a marker vouches for that are gone: a marker vouches for a track only while all
    its stems are there.

    Args:
        stored: the marker (read_marker).
        folder: the track's folder.
    Returns:
        The names of the stems missing from ``folder`` or (markers that record sizes) no longer
        of the size written.
    """
    sizes = stored.get("stem_bytes") or {}
    missing = []
    for name in stem_names(stored):
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


def remove_outputs(output: str, track: Track, stored: dict) -> None:
    """Remove ``track``'s marker and the stems the marker ``stored`` lists under ``output`` (a track that now fails keeps none)."""
    folder = track_folder(output, track)
    storage.delete([marker_uri(output, track)] + [storage.join(folder, name) for name in stem_names(stored)])


def write_marker(uri: str, record: dict) -> None:
    """Write a finished track's marker (atomically where the filesystem can)."""
    storage.write_bytes_atomic(uri, json.dumps(record, ensure_ascii=False).encode("utf-8"))


def rows_to_json(rows) -> list:
    """Metadata rows as a marker stores them."""
    return [{**row, "created_at": row["created_at"].isoformat()} for row in rows]


def rows_from_json(rows, **defaults) -> list:
    """A marker's stored rows as metadata rows.

    Args:
        rows: the marker's rows (JSON form).
        **defaults: values of columns its release did not write yet (the job's, which the
            marker's key vouches for: ``bit_depth``, ``F``).
    Returns:
        A list of dicts (``created_at`` as a datetime).
    """
    # Markers written before --precision existed hold float32 stems; before decode_warnings, no
    # damage was recorded.
    old = {"precision": "float32", "decode_warnings": None, "claimed_duration_s": None, "source_offset_s": None, "source_duration_s": None,
           "source_stream": None}
    return [{**old, **defaults, **row, "created_at": datetime.datetime.fromisoformat(row["created_at"])} for row in rows]


def stored_rows(stored: dict) -> list:
    """A marker's rows (as JSON), with the span its key vouches for where its release did not
    write it in the rows (the row's offset, duration and stream are in every key)."""
    key = stored.get("key") or {}
    span = {"source_offset_s": key.get("offset"), "source_duration_s": key.get("duration"), "source_stream": key.get("stream")}
    return [{**span, **row} for row in stored["rows"]]
