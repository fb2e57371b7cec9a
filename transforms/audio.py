"""DecodeAndChunk: a Track -> its T-frame segments, or an error, or (already done) its stored rows."""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import tempfile
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from stembeam.model.decode import AudioDecodeError, DecodeLimits, decode_to_file, read_raw
from stembeam.model.config import ModelConfig
from stembeam.model.separation import pad_segment, segment_count, segment_start
from stembeam.transforms import storage, workspace
from stembeam.transforms.records import Chunk, DecodeNote, Track
from stembeam.transforms.resume import changed_fields, decoding_change, key_run_here, source_identity, track_key
from stembeam.transforms.stem_files import StemFiles, marker_uri, missing_stems, read_marker, remove_outputs, stored_rows, track_folder
from stembeam.transforms.timing import timer

LOGGER = logging.getLogger("stembeam.pipeline")

ERRORS = "errors"
# DecodeAndChunk's other outputs: the stored rows of tracks an earlier run finished, and each
# decoded track's length.
FINISHED_EARLIER = "finished_earlier"
LENGTHS = "lengths"
@dataclasses.dataclass(frozen=True)
class Decoding:
    """How sources are decoded (frozen).

    Attributes:
        strict: a damaged file (decoder errors, another length than its header's) is an error
            row instead of an ok row carrying its ``decode_warnings``.
        limits: DecodeLimits: what a file may claim and cost.
    """

    strict: bool = False
    limits: DecodeLimits = DecodeLimits()


class DecodeAndChunk(beam.DoFn):
    """Track -> Chunk per segment, all from one call (so a track's segments stay in one bundle,
    in order: transforms/write.py WriteStems); tagged ``errors`` ``(track_id, uri, reason)``;
    tagged ``lengths``: ``(track_id, seconds)`` once the track's length is known; tagged
    ``finished_earlier``: stored metadata rows of tracks a previous run finished with the same resume key
    (transforms.resume: model and weights, output options, filter, span and source file), or
    that this run (``files.run_id``) already wrote, when a bundle is retried.

    Chunks carry the segment's samples ``[L, 2]`` float32 (decoded to a local file first, read
    back segment by segment).

    Args:
        config: ModelConfig (segments of T frames).
        files: StemFiles (where stems go, the resume key, run id).
        decoding: Decoding.
    """

    def __init__(self, config: ModelConfig, files: StemFiles, decoding: Decoding = Decoding()):
        self._decoding = decoding
        self._config = config
        self._output = files.output
        self._key = files.key
        self._skip_existing = files.skip_existing
        self._run_id = files.run_id
        self._skipped = Metrics.counter("stembeam", "tracks_skipped")
        self._decode_ms = Metrics.distribution("stembeam", "decode_ms")

    def _decode_dir(self):
        """Local work space that the next run on the output sweeps (a killed job leaves
        nothing behind), also for remote outputs."""
        return workspace.local_work_dir(self._output, create=True)

    def _finished_rows(self, track: Track, stored: dict | None):
        if stored is None:
            return None
        if not self._skip_existing and not (self._run_id and stored.get("run_id") == self._run_id):
            return None
        if stored.get("track_id") != track.track_id:
            # The folder once held another id's track (ids that changed between runs).
            LOGGER.info("%s: separated again, its folder's marker is of track %r", track.track_id, stored.get("track_id"))
            return None
        # The precision this worker runs (a bfloat16 request on a CPU without it runs float32).
        wanted = track_key(key_run_here(self._key), track, track.source_identity)
        changed = changed_fields(stored.get("key"), wanted)
        if changed:
            LOGGER.info("%s: separated again, its marker differs in %s", track.track_id, ", ".join(changed))
            return None
        missing = missing_stems(stored, track_folder(self._output, track))
        if missing:
            LOGGER.info("%s: separated again, its stems are missing or changed: %s", track.track_id, ", ".join(missing))
            return None
        if self._decoding.strict and any(row.get("decode_warnings") for row in stored.get("rows", [])):
            LOGGER.info("%s: decoded again, its stems were made from a damaged source (--strict_decoding)", track.track_id)
            return None
        return stored_rows(stored)

    def _fail(self, track: Track, stored: dict | None, reason: str):
        """The error of ``track``, whose stems an earlier run may have written: they go."""
        if stored is not None and stored.get("track_id") == track.track_id:
            remove_outputs(self._output, track, stored)
        return beam.pvalue.TaggedOutput(ERRORS, (track.track_id, track.source_uri, f"{track.source_uri}: {reason}"))

    def process(self, track: Track):
        stored = read_marker(marker_uri(self._output, track))
        try:
            identity = source_identity(track.source_uri)
            # Looked at before the marker is trusted; a track to decode gets it from its local copy.
            change = decoding_change(track.source_uri, identity[0]) if stored is not None else None
            track = dataclasses.replace(track, source_identity=identity, decoding=change)
        except Exception:  # noqa: BLE001 - a missing source: decoding below names the reason
            pass
        rows = self._finished_rows(track, stored)
        if rows is not None:
            self._skipped.inc()
            yield beam.pvalue.TaggedOutput(FINISHED_EARLIER, rows)
            return
        # The track is decoded whole to a local raw file first (memory: one block), so a file
        # that breaks half way is known before any of its segments is separated.
        with tempfile.TemporaryDirectory(prefix="stembeam-decode-", dir=self._decode_dir()) as tmp:
            raw = os.path.join(tmp, "decoded.f32")
            try:
                with storage.local_copy(track.source_uri) as path, timer(self._decode_ms):
                    track = dataclasses.replace(track, decoding=decoding_change(path))
                    decoded = decode_to_file(path, raw, self._config.sample_rate, track.offset, track.duration, track.stream,
                                             limits=self._decoding.limits)
            except (AudioDecodeError, ValueError) as error:
                yield self._fail(track, stored, getattr(error, "reason", str(error)))
                return
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise  # a full disk is the machine's failure, not the file's: the job's error
                yield self._fail(track, stored, f"{type(error).__name__}: {error}")
                return
            except Exception as error:  # noqa: BLE001 - any unreadable input is a row, not a crash
                yield self._fail(track, stored, f"{type(error).__name__}: {error}")
                return
            if decoded.warnings:
                damage = "; ".join(decoded.warnings)
                if self._decoding.strict:
                    yield self._fail(track, stored, f"damaged (--strict_decoding): {damage}")
                    return
                LOGGER.warning("warning: %s: damaged: %s", track.source_uri, damage)
            track = dataclasses.replace(track, decoded=DecodeNote(decoded.warnings, decoded.claimed_seconds))
            n_samples = decoded.frames
            count = segment_count(n_samples, self._config)
            yield beam.pvalue.TaggedOutput(LENGTHS, (track.track_id, n_samples / self._config.sample_rate))
            for index in range(count):
                start = time.perf_counter()
                span = pad_segment(read_raw(raw, segment_start(index, self._config), self._config.segment_samples), self._config)
                self._decode_ms.update(int(round(1000 * (time.perf_counter() - start))))
                yield Chunk(track, index, count, n_samples, span)
