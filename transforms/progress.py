"""Progress marks: an empty file per finished track under ``{output}/_work/progress/``, written
by the workers (any runner: they are files, read back through FileSystems, local or gs://),
counted by the launcher while the job runs (pipeline/progress.py).

A mark's name says everything (listing the folder is the only read):
``{sha1(track_id)[:16]}.{status}.{audio milliseconds or x}.{sha1(reason)[:8] or 0}``, status
``done`` (separated by this run), ``skipped`` (finished by an earlier run), ``failed``, or
``decoded`` (the track's length is known; not finished). A retried bundle rewrites the same
name, so nothing is counted twice.

Each track is decoded, separated and written within one stage (pipeline/corpus.py), so ``done``
marks come as tracks finish, all through the run.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import apache_beam as beam

from stembeam.transforms import storage

DONE, SKIPPED, FAILED, DECODED = "done", "skipped", "failed", "decoded"
FINISHED = (DONE, SKIPPED, FAILED)


def progress_root(output: str) -> str:
    """Where a job whose outputs go under ``output`` leaves its marks (a run clears it first)."""
    return storage.join(output, "_work", "progress")


def mark_key(track_id: str) -> str:
    """The part of a mark's file name that names ``track_id``: 16 hex digits of its sha1."""
    return hashlib.sha1(track_id.encode("utf-8")).hexdigest()[:16]


def mark_name(track_id: str, status: str, seconds: Optional[float], reason: str = "") -> str:
    """A mark's file name: ``{mark_key}.{status}.{milliseconds of audio or x}.{8 hex digits of the reason's sha1, or 0}``.

    Args:
        track_id: the track.
        status: ``decoded``, ``done``, ``skipped`` or ``failed``.
        seconds: the track's audio seconds, or None when unknown.
        reason: why it failed (empty otherwise).
    """
    audio = "x" if seconds is None else str(int(round(seconds * 1000)))
    why = hashlib.sha1(reason.encode("utf-8")).hexdigest()[:8] if reason else "0"
    return f"{mark_key(track_id)}.{status}.{audio}.{why}"


@dataclasses.dataclass
class Tally:
    """What the marks say: ``{mark: (track key, status, seconds or None)}``."""

    marks: dict = dataclasses.field(default_factory=dict)

    def count(self, status: str) -> int:
        """How many marks have ``status``."""
        return sum(1 for _, s, _ in self.marks.values() if s == status)

    def seconds(self, *statuses: str) -> float:
        """Audio seconds of the marks with any of ``statuses`` (unknown lengths count 0)."""
        return sum(sec or 0.0 for _, s, sec in self.marks.values() if s in statuses)

    def finished_keys(self) -> set:
        """Track keys of the marks of finished tracks (done, skipped or failed)."""
        return {key for key, status, _ in self.marks.values() if status in FINISHED}

    def decoded(self) -> dict:
        """``{track key: seconds}`` of the tracks whose length is known."""
        return {key: sec for key, status, sec in self.marks.values() if status == DECODED and sec is not None}


def read_tally(root: str) -> Tally:
    """The marks under the progress folder ``root`` as a Tally (one listing; the folder taken literally)."""
    tally = Tally()
    for path in storage.list_matching(root, "*"):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        parts = name.split(".")
        if len(parts) != 4:
            continue
        key, status, audio, _ = parts
        tally.marks[name] = (key, status, None if audio == "x" else int(audio) / 1000.0)
    return tally


class MarkProgress(beam.DoFn):
    """``(track_id, status, audio seconds or None, reason)`` -> an empty mark file.

    Args:
        root: the progress folder (progress_root).
    """

    def __init__(self, root: str):
        self._root = root

    def process(self, element):
        track_id, status, seconds, reason = element
        try:
            storage.write_bytes_atomic(storage.join(self._root, mark_name(track_id, status, seconds, reason)), b"")
        except Exception:  # noqa: BLE001, S110 - progress is advisory; the job's outputs do not depend on it
            pass


def metadata_progress(rows, first_stem: str, status: Optional[str] = None):
    """Marks of a stream of metadata rows (one row per stem, or one error row): the first stem's row
    (or the error row) stands for the track.

    Args:
        rows: a metadata row (dict) or a list of them.
        first_stem: the model's first stem.
        status: the status of ok tracks (None: ``done``).
    Returns:
        An iterator of ``(track_id, status, audio seconds or None, reason)`` (MarkProgress' input).
    """
    for row in rows if isinstance(rows, list) else [rows]:
        if row["status"] != "ok":
            yield row["track_id"], FAILED, None, row["error"] or ""
        elif row["stem"] == first_stem:
            yield row["track_id"], status or DONE, row["duration_s"], ""
