"""Elements that flow between the pipeline's transforms, and the metadata schema."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import unicodedata
from typing import Optional

import numpy as np
import pyarrow as pa

METADATA_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("source_uri", pa.string()),
        # The span of the source the stems were made from (the manifest row's offset, duration
        # (null: to the end) and audio stream (null: the only one)).
        ("source_offset_s", pa.float64()),
        ("source_duration_s", pa.float64()),
        ("source_stream", pa.int32()),
        ("stem", pa.string()),
        ("stem_uri", pa.string()),
        ("model", pa.string()),
        ("codec", pa.string()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_s", pa.float64()),
        ("rms", pa.float64()),
        ("peak", pa.float64()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("pipeline_version", pa.string()),
        # U-net arithmetic that ran: float32, bfloat16 (oneDNN on a CPU), mixed_bfloat16 or
        # mixed_float16 (Keras on a GPU); float32 when --precision bfloat16 fell back.
        ("precision", pa.string()),
        # Bits per sample of the stem files (wav 16, 24 or 32 = float; flac 24 or 16; null for lossy
        # codecs) and the U-nets' frequency bins (Spleeter's F: 1024 separates up to 11 kHz, 1536
        # up to 16 kHz, the -16kHz models).
        ("bit_depth", pa.int32()),
        ("F", pa.int32()),
        # Damage the decoders saw in the source ("; "-separated; null: a clean file), and the
        # length its container claims for the row's span (null: unknown), beside duration_s.
        ("decode_warnings", pa.string()),
        ("claimed_duration_s", pa.float64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclasses.dataclass(frozen=True)
class Track:
    """One manifest row to separate; ``stream``: the audio stream of a multi-stream file
    (a ``.stem.mp4`` holds the mixture in stream 0)."""

    track_id: str
    source_uri: str
    offset: float = 0.0
    duration: Optional[float] = None
    row: int = 0
    stream: Optional[int] = None
    # (size, modification time) of the source when it was decoded: part of the resume key.
    source_identity: Optional[tuple] = None
    # What in its decoding differs from earlier releases' (transforms.resume.decoding_change),
    # part of the resume key; what decoding found, once the track is decoded.
    decoding: Optional[str] = None
    decoded: Optional["DecodeNote"] = None

    @property
    def folder_name(self) -> str:
        """The track's folder under ``stems/``: the id itself when it is a safe, lower-case path
        component of at most FOLDER_BYTES bytes; else the id made safe (cut to fit) plus 8 hex
        digits of its sha1. So ``a/b`` and ``a_b`` differ, and so do ``Song`` and ``song`` on
        filesystems that ignore case (macOS, Windows). A safe id that itself ends like a hashed
        name (``-`` and 8 hex digits, e.g. ``_-rf-836830ee``) is hashed too, unless it is the
        row's default id (whose 8 digits hash its uri), so no plain id takes the folder of
        another id's hashed name: folder names are injective over ids (up to a collision of
        32-bit sha1 prefixes)."""
        safe = safe_component(self.track_id)
        if (safe == self.track_id and safe.casefold() == safe and len(safe.encode("utf-8")) <= FOLDER_BYTES
                and (not _HASHED_NAME.search(safe) or safe == default_track_id(self.source_uri))):
            return safe
        return f"{_cut_to_bytes(safe, FOLDER_BYTES - 9)}-{hashlib.sha1(self.track_id.encode('utf-8')).hexdigest()[:8]}"


@dataclasses.dataclass
class Chunk:
    """Segment ``index`` of ``count`` of a track of ``n_samples``.

    It carries its samples ``span [segment_samples, 2]`` into inference; after inference
    (span dropped) it names the U-nets' arithmetic that separated it.
    """

    track: Track
    index: int
    count: int
    n_samples: int
    span: Optional[np.ndarray] = None
    # The U-nets' arithmetic that separated it (model.precision.effective_precision), set by inference.
    precision: Optional[str] = None

    def reference(self, precision: Optional[str] = None) -> "Chunk":
        """This chunk without its samples (what travels once the samples are used)."""
        return Chunk(self.track, self.index, self.count, self.n_samples, None, precision or self.precision)


def default_track_id(uri: str) -> str:
    """Stable id from a (resolved) uri: its file name without extension and 8 hex digits of its
    sha1, so the same name in two folders gives two ids."""
    base = os.path.splitext(os.path.basename(uri.rstrip("/")))[0] or "track"
    return f"{base}-{hashlib.sha1(uri.encode('utf-8')).hexdigest()[:8]}"


# Filesystems cap a name at 255 bytes; the marker's temporary names add a few more.
FOLDER_BYTES = 200


def _cut_to_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


# How every hashed folder name ends; a plain id ending so is hashed as well.
_HASHED_NAME = re.compile(r"-[0-9a-f]{8}$")

_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]")


def safe_component(name: str) -> str:
    """``name`` as a single path component that cannot leave its folder or read as an option."""
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFC", name)).strip()
    if not cleaned or cleaned.startswith((".", "-")):
        cleaned = "_" + cleaned
    return cleaned[:200]


@dataclasses.dataclass(frozen=True)
class RowContext:
    """What every metadata row of a run shares: the model's name, the codec, stembeam's version,
    the U-nets' precision asked for, the stems' bit depth and the U-nets' bins (F)."""

    model: str
    codec: str
    version: str
    precision: Optional[str] = None
    bit_depth: Optional[int] = None
    F: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class DecodeNote:
    """What decoding a track's source found: its damage (empty: clean) and the length its
    container claims for the track's span (None: unknown)."""

    warnings: tuple = ()
    claimed_seconds: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class StemFacts:
    """What a metadata row says of one written stem.

    Args:
        name: the stem (``vocals``, ...).
        uri: its file.
        sample_rate: Hz of the written samples.
        channels: channels written.
        duration_s: seconds written.
        rms: root mean square of the float32 samples (all channels).
        peak: largest absolute sample.
    """

    name: str
    uri: str
    sample_rate: int
    channels: int
    duration_s: float
    rms: float
    peak: float


def error_row(context: RowContext, track_id: str, source_uri: str, reason: str, precision: Optional[str] = None) -> dict:
    """Metadata row of a track that could not be separated (``status`` error, ``reason``)."""
    return metadata_row(context, track_id, source_uri, error=reason, precision=precision)


def metadata_row(context: RowContext, track_id: str, source_uri: str, *, stem: Optional[StemFacts] = None, error: Optional[str] = None,
                 precision: Optional[str] = None, note: Optional[DecodeNote] = None, span: Optional["Track"] = None) -> dict:
    """A row of METADATA_SCHEMA.

    Args:
        context: the run's facts every row carries (model, codec, version, ...).
        track_id, source_uri: the track.
        stem: the written stem (None for a failed track's row).
        error: why the track failed (None: ``status`` ok).
        precision: what the U-nets ran as, when not the context's.
        note: what decoding the source found (warnings, claimed length).
        span: the Track whose offset, duration and stream the stems were made from.

    Returns:
        ``{column: value}`` with every METADATA_SCHEMA column, ``created_at`` now (UTC).
    """
    facts = stem or StemFacts(None, None, None, None, None, None, None)
    return {
        "track_id": track_id,
        "source_uri": source_uri,
        "source_offset_s": span.offset if span is not None else None,
        "source_duration_s": span.duration if span is not None else None,
        "source_stream": span.stream if span is not None else None,
        "stem": facts.name,
        "stem_uri": facts.uri,
        "model": context.model,
        "codec": context.codec,
        "sample_rate": facts.sample_rate,
        "channels": facts.channels,
        "duration_s": facts.duration_s,
        "rms": facts.rms,
        "peak": facts.peak,
        "status": "ok" if error is None else "error",
        "error": error,
        "pipeline_version": context.version,
        "precision": precision or context.precision,
        "bit_depth": context.bit_depth,
        "F": context.F,
        "decode_warnings": "; ".join(note.warnings) if note is not None and note.warnings else None,
        "claimed_duration_s": note.claimed_seconds if note is not None else None,
        "created_at": datetime.datetime.now(datetime.timezone.utc),
    }
