"""The spool: per-segment separated signals parked between inference and writing.

Only small references cross the regrouping shuffle, so no runner has to hold a whole
track in memory; the writer streams the spooled segments back in order. It lives under
``{output}/_work/`` (local or gs://), named by track and segment, so a retried bundle
rewrites the same file; it is removed as each track is written and at the end of the job.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile

import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms import storage
from transforms.records import Track

WORK = "_work"


def work_root(output: str) -> str:
    return storage.join(output, WORK)


def local_work_dir(output: str) -> str:
    """A local folder for decoded samples and staged stems: under ``{output}/_work/`` for a local
    output; for a remote one, a folder of this machine's temporary space named after the output.
    Either way the next run on the output sweeps it (clear_leftovers), so a killed job leaves
    nothing behind for long."""
    if storage.is_local(output):
        return os.path.join(storage.local_path(work_root(output)), "local")
    return os.path.join(tempfile.gettempdir(), "stembeam-work", hashlib.sha1(output.encode("utf-8")).hexdigest()[:16])


def spool_uri(output: str, track: Track, index: int) -> str:
    return storage.join(work_root(output), "spool", track.folder_name, f"{index:06d}.npy")


def write_spool(uri: str, signals: np.ndarray) -> None:
    """Park one segment's ``[L, 2, S]`` float32 signals at ``uri``."""
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    if storage.is_local(uri):
        path = storage.local_path(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        np.save(path, signals, allow_pickle=False)  # the name is unique to the segment: no rename needed
        return
    buffer = io.BytesIO()
    np.save(buffer, signals, allow_pickle=False)
    storage.write_bytes_atomic(uri, buffer.getvalue())


def read_spool(uri: str) -> np.ndarray:
    if storage.is_local(uri):
        return np.load(storage.local_path(uri), allow_pickle=False)
    return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)


def delete_quietly(uris) -> None:
    """Remove spool files or folders; ones already gone are fine."""
    existing = [uri for uri in uris if uri and FileSystems.exists(uri)]
    if existing:
        try:
            FileSystems.delete(existing)
        except Exception:  # noqa: BLE001 - a leftover is removed again at the end of the job
            pass
