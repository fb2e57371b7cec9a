"""The resume key: everything that shapes the bytes of a track's stems, stored in its marker.

A rerun skips a track only when its marker's key equals the key the run would write, so a
changed model (folder or weights), output option, filter, span of the row or source file
separates the track again. Options added later (precision, features) join the job key.
"""
from __future__ import annotations

import json

from apache_beam.io.filesystems import FileSystems

from model.audio import LOSSLESS_CODECS
from transforms.records import Track

# Raised when the code changes what a given key produces.
KEY_VERSION = 1


def job_key(model_name: str, model_fingerprint: str, codec: str, bitrate: str, filter_name: str, **more) -> dict:
    """The part of the key that is the same for every track of a run: the model (its name and
    a hash of its weights), the codec and its bitrate (lossy codecs only), the filter, and
    any ``more`` options that change the stems' bytes."""
    return {
        "key_version": KEY_VERSION,
        "model": model_name,
        "model_fingerprint": model_fingerprint,
        "codec": codec,
        "bitrate": None if codec in LOSSLESS_CODECS else bitrate,
        "filter": filter_name,
        **more,
    }


def source_identity(uri: str) -> tuple:
    """``(size, modification time)`` of the source file (local, or gs://: the object's update
    time, which every new generation changes), through Beam FileSystems."""
    metadata = FileSystems.match([uri])[0].metadata_list
    if not metadata:
        raise FileNotFoundError(f"{uri}: file not found")
    return (metadata[0].size_in_bytes, metadata[0].last_updated_in_seconds)


def track_key(job: dict, track: Track, identity: tuple | None) -> dict:
    """The whole key of ``track``: the job's, the row's source, span and stream, and the
    source file's identity; in its JSON form, as the marker stores it."""
    key = {
        **job,
        "source_uri": track.source_uri,
        "source": {"size": identity[0], "modified": identity[1]} if identity else None,
        "offset": track.offset,
        "duration": track.duration,
        "stream": track.stream,
    }
    return json.loads(json.dumps(key))


def changed_fields(stored: dict | None, wanted: dict) -> list:
    """The key fields that differ (every field when there is no stored key)."""
    stored = stored or {}
    return sorted(name for name in set(stored) | set(wanted) if stored.get(name) != wanted.get(name))
