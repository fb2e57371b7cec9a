"""WriteStems (audio files + a per-track marker) and WriteMetadata (Parquet)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from stembeam.model.encode import CODECS, AudioEncodeError, AudioWriter, default_bit_depth
from stembeam.model.config import ModelConfig
from stembeam.model.separation import OverlapAdd, with_residual
from stembeam.transforms import storage, workspace
from stembeam.transforms.stem_files import StemFiles, marker_uri, read_marker, rows_to_json, stem_names, track_folder, write_marker
from stembeam.transforms.records import METADATA_SCHEMA, Chunk, RowContext, StemFacts, Track, error_row, metadata_row
from stembeam.transforms.resume import track_key, with_precision
from stembeam.transforms.staged import WriteTable
from stembeam.transforms.timing import timer

# WriteMetadata's one shard: a new table replaces the old one under the same name.
METADATA_FILE = "tracks-00000-of-00001.parquet"


@dataclasses.dataclass(frozen=True)
class _Encoding:
    """How every stem file of a run is encoded (model.encode.AudioWriter's arguments)."""

    codec: str
    bitrate: str
    bit_depth: int | None


class _TrackInFlight:
    """One track being written: an AudioWriter per stem, fed its segments in order.

    ``add(signals)`` overlap-adds the next segment's ``[L, 2, S]`` signals and encodes the
    stretch that no later segment touches (memory: one segment's overlap); ``close()`` encodes
    the rest, cropped to the track's length, and renames every stem into place."""

    def __init__(self, chunk: Chunk, config: ModelConfig, uris: dict, staging: str | None, encoding: _Encoding, timers: tuple,
                 residual: bool = False):
        self.track, self.count, self.next = chunk.track, chunk.count, 0
        self.uris = uris
        self.precisions = set()
        self._config = config
        self._remaining = chunk.n_samples
        self._adder = OverlapAdd(config)
        self._add_ms, self._encode_ms = timers
        self._staging = staging
        self._residual = residual
        self.writers = {}
        try:
            if staging is not None:
                os.makedirs(staging, mode=0o700, exist_ok=True)
            for stem, uri in uris.items():
                local = uri if staging is None else os.path.join(staging, os.path.basename(uri))
                self.writers[stem] = AudioWriter(local, config.sample_rate, config.n_channels, encoding.codec, encoding.bitrate, encoding.bit_depth)
        except BaseException:
            self.abort()
            raise

    def _encode(self, piece: np.ndarray) -> None:
        piece = piece[: self._remaining]
        self._remaining -= piece.shape[0]
        if self._residual:
            # The mixture came along as one more channel (FilterSegments): the last stem is it
            # minus the others.
            piece = with_residual(piece[..., :-1], piece[..., -1])
        with timer(self._encode_ms):
            for k, writer in enumerate(self.writers.values()):
                writer.write(piece[..., k])

    def add(self, signals: np.ndarray, precision: str | None) -> None:
        with timer(self._add_ms):
            piece = self._adder.add(signals)
        self._encode(piece)
        self.precisions.add(precision or "float32")
        self.next += 1

    @property
    def complete(self) -> bool:
        return self.next == self.count

    def finish_signals(self) -> None:
        self._encode(self._adder.finish())

    def facts(self, stem: str) -> StemFacts:
        """What the metadata row says of ``stem``'s file, once written."""
        writer = self.writers[stem]
        rate = self._config.sample_rate
        return StemFacts(stem, self.uris[stem], rate, self._config.n_channels, writer.frames / rate, writer.rms, writer.peak)

    def close(self) -> dict:
        """Rename every stem into place (remote: upload the staged file); ``{file name: bytes}``."""
        with timer(self._encode_ms):
            for writer in self.writers.values():
                writer.close()
            sizes = {}
            for stem, uri in self.uris.items():
                if not storage.is_local(uri):
                    storage.put_file(self.writers[stem].path, uri)
                sizes[os.path.basename(uri)] = os.path.getsize(self.writers[stem].path)
        self._drop_staging()
        return sizes

    def abort(self) -> None:
        for writer in reversed(list(self.writers.values())):  # the first one made the folder
            writer.abort()
        self._drop_staging()

    def _drop_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


class WriteStems(beam.DoFn):
    """``(Chunk reference, its [L, 2, S] source signals)``, segments of each track in order ->
    metadata rows, one per stem (or an error row per track).

    All segments of a track come from one DecodeAndChunk call, so they are in one bundle, in
    order (RunInference's batches keep their order; one batch may end one track and start the
    next). Each track's segments are overlap-added as they arrive into one AudioWriter per stem
    (memory: one segment per track in flight; at most a batch's worth of tracks are), cropped to
    the track's length. When its last segment is in, an earlier marker is removed, the stems are
    renamed into place, and the track's marker (its resume key, rows and stem sizes) is written
    last: a marker always means every stem of its key is in place, and it is written while the
    job goes on with other tracks. A track whose segments come out of order, or that is still
    incomplete when the bundle ends (split across bundles), is one error row naming it: its
    partial files are removed, never renamed (its later segments, in another bundle, are
    dropped). A track's stems of an earlier run that this run does not write again (another
    codec) are removed once its new stems are in place.

    Only errors of the track's data (non-finite samples, the encoder refusing it) become error
    rows; disk and network failures raise, so the runner retries the bundle (a retried bundle
    skips the tracks this run finished: DecodeAndChunk finds their markers).

    Args:
        config: ModelConfig (instruments, rate, segment length).
        files: StemFiles (output, resume key, codec, bitrate, bit depth, run id).
        residual: the signals carry the mixture as a last source ``[L, 2, S+1]``
            (FilterSegments); the last stem becomes the mixture minus the others.
    """

    def __init__(self, config: ModelConfig, files: StemFiles, residual: bool = False):
        self._config = config
        key = files.key
        self._bit_depth = default_bit_depth(files.codec) if files.bit_depth is None else files.bit_depth
        self._residual = residual
        self._output = files.output
        self._key = key
        self._codec = files.codec
        self._encoding = _Encoding(files.codec, files.bitrate, self._bit_depth)
        self._context = RowContext(key["model"], files.codec, files.version, key.get("precision", "float32"), self._bit_depth, config.F)
        self._run_id = files.run_id
        self._ok = Metrics.counter("stembeam", "tracks_ok")
        self._failed = Metrics.counter("stembeam", "tracks_failed")
        self._seconds = Metrics.counter("stembeam", "audio_seconds_separated")
        self._timers = (Metrics.distribution("stembeam", "overlap_add_ms"), Metrics.distribution("stembeam", "encode_ms"))
        self._open = {}
        self._broken = set()

    def start_bundle(self):
        # _broken outlives the bundle: a split track's later segments find it there.
        self._open = {}

    def _start(self, chunk: Chunk) -> _TrackInFlight:
        track = chunk.track
        folder = track_folder(self._output, track)
        uris = {stem: storage.join(folder, f"{stem}.{CODECS[self._codec][0]}") for stem in self._config.instruments}
        staging = None
        if not storage.is_local(folder):
            staging = tempfile.mkdtemp(prefix="stems-", dir=workspace.local_work_dir(self._output, create=True))
        return _TrackInFlight(chunk, self._config, uris, staging, self._encoding, self._timers, self._residual)

    def _error(self, track: Track, reason: str, precision: str | None = None) -> dict:
        self._failed.inc()
        return error_row(self._context, track.track_id, track.source_uri, f"{track.source_uri}: {reason}", precision)

    def _fail(self, track_id: str, reason: str):
        flight = self._open.pop(track_id, None)
        if flight is not None:
            flight.abort()
        self._broken.add(track_id)
        return flight

    def process(self, element):
        chunk, signals = element
        track: Track = chunk.track
        track_id = track.track_id
        if track_id in self._broken:
            return
        flight = self._open.get(track_id)
        if flight is None and chunk.index == 0:
            flight = self._open[track_id] = self._start(chunk)
        if flight is None:
            # The rest of a track whose first segments ended another bundle: that bundle's
            # finish_bundle gave its one error row.
            self._broken.add(track_id)
            return
        if chunk.index != flight.next:
            arrived = f"0..{flight.next - 1}" if flight.next else "none"
            self._fail(track_id, "out of order")
            yield self._error(track, f"segment {chunk.index} of {chunk.count} arrived after segments {arrived}; the track was not written")
            return
        try:
            flight.add(signals, chunk.precision)
            if not flight.complete:
                return
            flight.finish_signals()
        except (AudioEncodeError, ValueError) as error:
            self._fail(track_id, str(error))
            yield self._error(track, f"writing stems failed: {error}", "+".join(sorted(flight.precisions)) or None)
            return
        except OSError as error:
            self._fail(track_id, "raised")
            raise self._named(error, track) from error
        except BaseException:
            self._fail(track_id, "raised")
            raise
        del self._open[track_id]
        try:
            yield from self._finish(flight)
        except OSError as error:
            raise self._named(error, track) from error

    def _named(self, error: OSError, track: Track) -> OSError:
        """A disk or network failure (the runner retries the bundle), naming the track and where."""
        return OSError(error.errno, f"writing the stems of track {track.track_id} under {track_folder(self._output, track)}: {error.strerror or error}")

    def _finish(self, flight: _TrackInFlight):
        track = flight.track
        # What the U-nets ran as, as the inference reported it (segments retried on another kind
        # of worker could differ: then all of them are named).
        precision = "+".join(sorted(flight.precisions))
        key = track_key(with_precision(self._key, precision), track, track.source_identity)
        marker = marker_uri(self._output, track)
        earlier = read_marker(marker)
        try:
            # From here on stems are replaced: the old marker must not vouch for a mix of old and new.
            storage.delete([marker])
            sizes = flight.close()
        except BaseException:
            flight.abort()
            raise
        self._drop_earlier_stems(earlier, flight)
        sample_rate = self._config.sample_rate
        rows = [
            metadata_row(self._context, track.track_id, track.source_uri, stem=flight.facts(stem), precision=precision, note=track.decoded, span=track)
            for stem, uri in flight.uris.items()
        ]
        write_marker(marker, {"key": key, "run_id": self._run_id, "track_id": track.track_id, "rows": rows_to_json(rows), "stem_bytes": sizes})
        self._ok.inc()
        self._seconds.inc(int(round(flight.writers[self._config.instruments[0]].frames / sample_rate)))
        yield from rows

    def _drop_earlier_stems(self, earlier: dict | None, flight: _TrackInFlight) -> None:
        """Remove the stems an earlier run of this track wrote that this run did not write over."""
        if not earlier or earlier.get("track_id") != flight.track.track_id:
            return
        folder = track_folder(self._output, flight.track)
        names = set(stem_names(earlier)) - {os.path.basename(uri) for uri in flight.uris.values()}
        storage.delete([storage.join(folder, name) for name in sorted(names)])

    def finish_bundle(self):
        # A track still open here had segments left for another bundle: never a partial track.
        for track_id in list(self._open):
            flight = self._fail(track_id, "split")
            row = self._error(flight.track, f"only segments 0..{flight.next - 1} of {flight.count} arrived in this bundle; the track was not written")
            yield WindowedValue(row, MIN_TIMESTAMP, [GlobalWindow()])

    def teardown(self):
        for track_id in list(self._open):
            self._fail(track_id, "teardown")


class ToErrorRows(beam.DoFn):
    """``(track_id, uri, reason)`` -> an error metadata row of a run (``context``).

    Args:
        context: the run's RowContext (transforms.records).
    """

    def __init__(self, context: RowContext):
        self._context = context
        self._failed = Metrics.counter("stembeam", "tracks_failed")

    def process(self, element):
        track_id, uri, reason = element
        self._failed.inc()
        yield error_row(self._context, track_id, uri, reason)


class WriteMetadata(beam.PTransform):
    """Metadata rows -> ``{output}/metadata/tracks-*.parquet`` with METADATA_SCHEMA: written
    under ``staging`` (storage.staging_folder; never a prefix under the output, see
    transforms/staged.py), then moved into ``metadata/``, replacing the old table.

    Args:
        output: the output folder.
        staging: the staging folder (None: storage.staging_folder(output)).
    """

    def __init__(self, output: str, staging: str | None = None):
        super().__init__()
        self._output = output
        self._staging = staging or storage.staging_folder(output)

    def expand(self, rows):
        return rows | "WriteParquet" >> WriteTable(METADATA_SCHEMA, storage.join(self._staging, "metadata"), storage.join(self._output, "metadata"), "tracks")
