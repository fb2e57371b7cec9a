"""The resume key: everything that shapes the bytes of a track's stems, stored in its marker.

A rerun skips a track only when its marker's key equals the key the run would write, so a
changed model (folder or weights), output option, filter, span of the row or source file
separates the track again. Options added later (precision, features) join the job key.
"""
from __future__ import annotations

import json

from stembeam.model import headers
from stembeam.model.encode import LOSSLESS_CODECS
from stembeam.model.precision import effective_precision
from stembeam.transforms import storage
from stembeam.transforms.records import Track

# Raised when the code changes what a given key produces.
KEY_VERSION = 1


def job_key(model_name: str, model_fingerprint: str, codec: str, bitrate: str, filter_name: str, **more) -> dict:
    """The part of the resume key that is the same for every track of a run.

    Args:
        model_name: the model's name.
        model_fingerprint: a hash of its weights (model.load.weights_fingerprint).
        codec: one of CODECS.
        bitrate: kept for lossy codecs only.
        filter_name: the filter (soft masks or Wiener).
        **more: any other options that change the stems' bytes (precision, bit_depth, residual...).
    Returns:
        The key as a dict (JSON-ready).
    """
    return {
        "key_version": KEY_VERSION,
        "model": model_name,
        "model_fingerprint": model_fingerprint,
        "codec": codec,
        "bitrate": None if codec in LOSSLESS_CODECS else bitrate,
        "filter": filter_name,
        **more,
    }


def key_run_here(job: dict) -> dict:
    """The job key with its ``precision`` (the one asked for) replaced by what it runs as on this
    machine (model.precision.effective_precision): float32 keys carry no precision field, as
    before --precision existed; otherwise ``bfloat16``, ``mixed_bfloat16`` or ``mixed_float16``.

    Args:
        job: a job_key.
    Returns:
        A new dict.
    """
    if "precision" not in job:
        return job
    return with_precision(job, effective_precision(job["precision"]))


def with_precision(job: dict, precision: str) -> dict:
    """The job key ``job`` for stems made with the U-net arithmetic ``precision`` (a new dict; float32: no precision field)."""
    key = {name: value for name, value in job.items() if name != "precision"}
    return key if precision == "float32" else {**key, "precision": precision}


def source_identity(uri: str) -> tuple:
    """The identity of a source file at exactly ``uri``: a name with ``[ ]``, ``*`` or ``?`` is never
    read as a pattern (that gave one file another's identity).

    Returns:
        ``(size, modification time)`` (gs://: the object's update time, which every new
        generation changes).
    """
    return storage.stat(uri)


def decoding_change(uri: str, size: int | None = None) -> str | None:
    """What in the decoding of a source differs from earlier releases', as a resume-key field value
    (None: nothing; the key then has no ``decoding`` field, so stems of unchanged formats stay
    valid): ``int32-pcm`` (32-bit integer WAV, which tensorflow-io read as float32 bit
    patterns), ``wavex-law`` (u-law and a-law WAVEX, read as PCM). Reads the header only
    (model.headers: pure Python), local or remote.

    Args:
        uri: the source file.
        size: its size when known (saves a stat).
    Returns:
        The field's value, or None.
    """
    from apache_beam.io.filesystems import FileSystems

    try:
        if size is None:
            size = storage.stat(uri)[0]
        with FileSystems.open(uri, compression_type="uncompressed") if not storage.is_local(uri) else open(storage.local_path(uri), "rb") as handle:
            pcm = headers.read_pcm_header(handle, size)
    except Exception:  # noqa: BLE001 - unreadable: decoding says why; nothing changed for such a file
        return None
    if pcm is None or pcm.kind != "wav":
        return None
    if pcm.format_tag == headers.PCM and pcm.bits == 32:
        return "int32-pcm"
    if pcm.extensible and pcm.format_tag in (headers.ALAW, headers.MULAW):
        return "wavex-law"
    return None


def track_key(job: dict, track: Track, identity: tuple | None) -> dict:
    """The whole resume key of a track, in its JSON form, as the marker stores it.

    Args:
        job: the job_key (key_run_here).
        track: Track (its source, span, stream and ``decoding``: decoding_change).
        identity: source_identity of its file, or None.
    Returns:
        A dict.
    """
    more = {} if track.decoding is None else {"decoding": track.decoding}
    key = {
        **job,
        **more,
        "source_uri": track.source_uri,
        "source": {"size": identity[0], "modified": identity[1]} if identity else None,
        "offset": track.offset,
        "duration": track.duration,
        "stream": track.stream,
    }
    return json.loads(json.dumps(key))


def changed_fields(stored: dict | None, wanted: dict) -> list:
    """The key fields that differ.

    Args:
        stored: the marker's key, or None.
        wanted: this run's key.
    Returns:
        Sorted field names (every field when there is no stored key).
    """
    stored = stored or {}
    return sorted(name for name in set(stored) | set(wanted) if stored.get(name) != wanted.get(name))
