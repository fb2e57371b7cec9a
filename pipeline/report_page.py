"""The web page of a finished output (``stembeam report``), built from its tables alone: no audio
is decoded, no model loaded, nothing Beam runs.

``build_report`` gives the report folder's files as ``(relative path, bytes)`` pairs:

- ``index.html`` with ``assets/`` (the page's script and style, and plotly.js from the ``plotly``
  package): static, the same for every output; one page with two views, the front page and a
  track's view (``index.html#track=ID``);
- ``data/summary.js``: the runs, failures and the corpus plots' aggregates (histograms, quartiles):
  its size does not grow with the number of tracks (failure rows and run groups are capped);
- ``data/tracks.js``: the track table, one compact column per field, loaded after the front page
  has drawn;
- ``data/tracks/NNNNN.js``: per-track data (audio links, features, series) for about
  TRACKS_PER_SHARD tracks each; a track's shard is the CRC-32 of its id's UTF-8 bytes modulo the
  shard count, so the track view loads the one file it needs.

Data files are scripts that assign to ``window.STEMBEAM`` (a page opened from ``file://`` may not
fetch() its neighbours, but may load them as scripts); their JSON has ``<``, ``>``, ``&`` and
U+2028/2029 escaped, and the page builds its DOM with ``textContent`` only, so ids, uris and
reasons from a user's manifest render as text.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import math
import os
import re
import urllib.parse
import zlib
from typing import Iterable, Iterator, Optional

import numpy as np
import pyarrow as pa

from stembeam.model.features.envelope import envelope_db
from stembeam.transforms import storage

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report_assets")
STATIC_FILES = {"index.html": "index.html", "assets/report.js": "report.js", "assets/report.css": "report.css"}
PLOTLY_FILE = "assets/plotly.min.js"
SUMMARY_FILE, TABLE_FILE = "data/summary.js", "data/tracks.js"
MIXTURE = "mixture"
TRACKS_PER_SHARD = 32
RUN_GAP_S = 1800.0  # tracks written more than 30 minutes apart belong to different runs (without a known run start)
MAX_FAILURE_GROUPS, MAX_FAILURE_ROWS, MAX_RUNS = 50, 20, 50
# Per-track series are thinned to at most this many points (what a plot a page wide can show).
SHORT_TERM_POINTS, F0_POINTS = 600, 1500
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")  # model/features/tonality.py's names


@dataclasses.dataclass(frozen=True)
class PageSettings:
    """What the page says beyond the tables: ``output``, the folder the tables are from (the
    report goes to ``{output}/report/``, audio links are relative to it); ``run_started``, the
    start of the latest run when known (``pipeline --report``: tracks whose stems are older were
    already done), else runs are told apart by gaps of over ``run_gap_s`` between tracks;
    ``generated_at`` (default: now); ``plotly_js``, the plotly.js bundle written to assets/ (None:
    the caller writes it); ``tracks_per_shard``, how many tracks' data one file of data/tracks/ holds;
    ``run_flags``, the flags the latest run was given, when known (the tables do not keep them all)."""

    output: str
    run_started: Optional[datetime.datetime] = None
    run_gap_s: float = RUN_GAP_S
    generated_at: Optional[datetime.datetime] = None
    plotly_js: Optional[bytes] = None
    plotly_version: Optional[str] = None
    version: Optional[str] = None
    tracks_per_shard: int = TRACKS_PER_SHARD
    run_flags: tuple = ()  # the latest run's own flags (pipeline/features --report: flags.given_flags)


def script_json(name: str, value) -> bytes:
    """A data file: ``value`` as JSON assigned to ``window.STEMBEAM[name]``, safe inside any HTML
    or script context (``<``, ``>``, ``&``, U+2028 and U+2029 escaped; NaN and infinities are
    refused: callers give None)."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    key = json.dumps(name)
    return f"(window.STEMBEAM = window.STEMBEAM || {{}})[{key}] = {text};\n".encode("utf-8")


def shard_of(track_id: str, shards: int) -> int:
    """The shard holding ``track_id``'s data: CRC-32 of its UTF-8 bytes modulo ``shards`` (report.js computes the same)."""
    return zlib.crc32(track_id.encode("utf-8")) % shards


def shard_file(shard: int) -> str:
    return f"data/tracks/{shard:05d}.js"


def _number(value, digits: int = 2):
    """A finite float rounded to ``digits``, else None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _column(table: Optional[pa.Table], name: str) -> list:
    if table is None:
        return []
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


class _Lists:
    """A list column as one numpy array of values and the offsets of each row (no Python object
    per value): ``row(i)`` is row ``i``'s values, None for a null list."""

    def __init__(self, table: Optional[pa.Table], name: str, field: Optional[str] = None):
        self.present = table is not None and name in table.column_names
        if not self.present:
            return
        column = table.column(name).combine_chunks()
        self.offsets = column.offsets.to_numpy()
        self.valid = column.is_valid().to_numpy(zero_copy_only=False)
        values = column.values if field is None else column.values.field(field)
        self.values = values.to_numpy(zero_copy_only=False)

    def row(self, i: int):
        if not self.present or not self.valid[i]:
            return None
        return self.values[self.offsets[i] : self.offsets[i + 1]]


# ---------------------------------------------------------------------------------------------
# Links from {output}/report/ to the audio


def audio_href(uri: Optional[str], output: str) -> Optional[str]:
    """A relative URL from ``{output}/report/`` to the file ``uri``, or None when a copy of the
    output folder could not reach it: a local file (any local path, when the output is local), or
    a remote one inside the output folder (e.g. ``gs://b/out/stems/...`` from ``gs://b/out``)."""
    if not uri:
        return None
    if storage.is_local(output) and storage.is_local(uri):
        report = os.path.join(os.path.abspath(storage.local_path(output)), "report")
        try:
            relative = os.path.relpath(os.path.abspath(storage.local_path(uri)), report)
        except ValueError:  # another drive (Windows)
            return None
        path = relative.replace(os.sep, "/")
    else:
        root = output.rstrip("/") + "/"
        if not uri.startswith(root):
            return None
        path = "../" + uri[len(root) :]
    return urllib.parse.quote(path, safe="/")


def stem_href(uri: str) -> str:
    """A relative URL from ``{output}/report/`` to a stem the pipeline wrote: stems are always at
    ``{output}/stems/{track folder}/{file}``, so the link holds wherever the output is, however
    ``--output`` was spelled (a relative path, gs://) and wherever the folder was copied."""
    folder, name = uri.replace("\\", "/").rstrip("/").split("/")[-2:]
    return "../stems/" + urllib.parse.quote(folder, safe="") + "/" + urllib.parse.quote(name, safe="")


# ---------------------------------------------------------------------------------------------
# Statistics for the corpus plots (aggregates only: the front page does not grow with the corpus)


def box(values) -> Optional[dict]:
    """Quartiles of ``values`` for a Plotly box drawn from precomputed statistics (whiskers at the
    minimum and maximum), or None for no values."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return None
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"n": int(values.size), "min": _number(values.min()), "q1": _number(q1), "median": _number(median), "q3": _number(q3),
            "max": _number(values.max()), "mean": _number(values.mean())}


def histogram(values, width: float, lower: Optional[float] = None, upper: Optional[float] = None) -> Optional[dict]:
    """Counts of ``values`` in bins ``width`` wide (edges on multiples of ``width``, or from
    ``lower`` to ``upper``): ``{"edges": [k + 1], "counts": [k]}``, or None for no values."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if values.size == 0:
        return None
    low = math.floor(values.min() / width) * width if lower is None else lower
    high = max(math.floor(values.max() / width) * width + width, low + width) if upper is None else upper
    edges = np.arange(round((high - low) / width) + 1) * width + low
    counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
    return {"edges": [_number(e, 4) for e in edges], "counts": counts.tolist(), "n": int(values.size)}


def reason_group(reason: str, names: Iterable[str]) -> str:
    """What failures share: ``reason`` without the row's own file names and id (``names``), so that
    "a.mp3: not decodable as audio (...)" and "b.mp3: not decodable as audio (...)" group together."""
    text = reason
    for name in sorted({n for n in names if n}, key=len, reverse=True):
        text = text.replace(name + ":", "")  # reasons name their file (or track) as a prefix: "{uri}: ..."
    text = re.sub(r"\s+", " ", re.sub(r"^[\s:;,-]+", "", text)).strip()
    return text or reason


# ---------------------------------------------------------------------------------------------
# The tables, per track


@dataclasses.dataclass
class _Track:
    id: str
    source_uri: Optional[str] = None
    status: Optional[str] = None
    error: Optional[str] = None
    duration_s: Optional[float] = None
    created_at: Optional[datetime.datetime] = None
    stems: dict = dataclasses.field(default_factory=dict)  # stem -> metadata row facts
    sources: dict = dataclasses.field(default_factory=dict)  # source -> sources-table row index
    features: Optional[int] = None  # tracks-table row index
    run: Optional[int] = None  # index of the run that wrote its stems (_runs)
    separated: bool = False  # listed in metadata/ (else only in the feature tables: a `stembeam features` output)


def _from_metadata(metadata: Optional[pa.Table], tracks: dict, stem_order: list, runs_rows: list) -> None:
    if metadata is None or metadata.num_rows == 0:
        return
    names = ("track_id", "source_uri", "stem", "stem_uri", "model", "codec", "sample_rate", "channels", "duration_s", "status", "error",
             "pipeline_version", "precision", "bit_depth", "F", "created_at")
    columns = {name: _column(metadata, name) for name in names}
    for i in range(metadata.num_rows):
        row = {name: columns[name][i] for name in names}
        track = tracks.setdefault(row["track_id"], _Track(row["track_id"], separated=True))
        track.source_uri = track.source_uri or row["source_uri"]
        created = row["created_at"]
        if created is not None and (track.created_at is None or created > track.created_at):
            track.created_at = created
        if row["status"] == "ok" and row["stem"]:
            track.status = track.status or "ok"
            track.duration_s = track.duration_s if track.duration_s is not None else row["duration_s"]
            track.stems[row["stem"]] = row
            if row["stem"] not in stem_order:
                stem_order.append(row["stem"])
        else:
            track.status, track.error = "error", row["error"] or "failed (no reason given)"
        runs_rows.append(row)


def _from_features(sources: Optional[pa.Table], features: Optional[pa.Table], tracks: dict, stem_order: list) -> None:
    for i, (track_id, source) in enumerate(zip(_column(sources, "track_id"), _column(sources, "source"))):
        track = tracks.setdefault(track_id, _Track(track_id))
        track.sources[source] = i
        if source != MIXTURE and source not in stem_order:
            stem_order.append(source)
    for i, track_id in enumerate(_column(features, "track_id")):
        tracks.setdefault(track_id, _Track(track_id)).features = i


def _runs(rows: list, tracks: dict, settings: PageSettings) -> list:
    """Groups of tracks by when their stems were written (a track's latest ``created_at``): before
    and since ``run_started`` when known, else runs apart by more than ``run_gap_s``; oldest first,
    so the last group is the latest run. Sets each ok track's ``run``."""
    timed = sorted((t.created_at, t.id) for t in tracks.values() if t.created_at is not None)
    keys, group, last = {}, 0, None
    for created, track_id in timed:
        if settings.run_started is not None:
            keys[track_id] = int(created >= settings.run_started)
            continue
        if last is not None and (created - last).total_seconds() > settings.run_gap_s:
            group += 1
        keys[track_id], last = group, created
    numbers = {key: n for n, key in enumerate(sorted(set(keys.values())))}
    fields = ("model", "codec", "precision", "bit_depth", "F", "pipeline_version")
    groups = [{"first": None, "last": None, "ok": set(), "failed": set(), "audio_s": 0.0, **{key: set() for key in fields}} for _ in numbers]
    for row in rows:
        track = tracks[row["track_id"]]
        if track.id not in keys:
            continue
        group = groups[numbers[keys[track.id]]]
        created = row["created_at"]
        group["first"] = min(filter(None, (group["first"], created)))
        group["last"] = max(filter(None, (group["last"], created)))
        (group["ok"] if track.status == "ok" else group["failed"]).add(track.id)
        for key in fields:
            if row[key] is not None:
                group[key].add(row[key])
    for track in tracks.values():
        if track.id in keys and track.status == "ok":
            track.run = numbers[keys[track.id]]
            groups[track.run]["audio_s"] += track.duration_s or 0.0
    return [{
        "first": group["first"].isoformat(timespec="seconds"), "last": group["last"].isoformat(timespec="seconds"),
        "tracks_ok": len(group["ok"]), "tracks_failed": len(group["failed"]), "audio_hours": _number(group["audio_s"] / 3600, 3),
        **{key: sorted(str(v) for v in group[key]) for key in fields},
    } for group in groups]


# ---------------------------------------------------------------------------------------------
# Frame series (frames table, --feature_frames), thinned


def _power_mean_lufs(values: np.ndarray, points: int) -> list:
    """Short-term loudness ``values [n]`` (LUFS, NaN for silence) as at most ``points`` values:
    each group's power mean (silence counts as zero power), rounded to 0.1; None for silent groups."""
    step = max(1, math.ceil(values.shape[0] / points))
    if step == 1:
        return [_number(v, 1) for v in values]
    padded = np.full(math.ceil(values.shape[0] / step) * step, np.nan)
    padded[: values.shape[0]] = values
    groups = padded.reshape(-1, step)
    power = np.where(np.isnan(groups), 0.0, np.power(10.0, groups / 10.0))
    counts = np.full(groups.shape[0], step)
    counts[-1] = values.shape[0] - step * (groups.shape[0] - 1)
    with np.errstate(divide="ignore"):
        mean = 10.0 * np.log10(power.sum(axis=1) / counts)
    return [_number(v, 1) for v in mean]


def _median_f0(values: np.ndarray, points: int) -> list:
    """f0 ``values [n]`` (Hz, NaN unvoiced) as at most ``points`` values: each group's median over
    its voiced frames, None for unvoiced groups."""
    step = max(1, math.ceil(values.shape[0] / points))
    if step > 1:
        padded = np.full(math.ceil(values.shape[0] / step) * step, np.nan)
        padded[: values.shape[0]] = values
        groups = padded.reshape(-1, step)
        voiced = ~np.all(np.isnan(groups), axis=1)
        values = np.full(groups.shape[0], np.nan)
        values[voiced] = np.nanmedian(groups[voiced], axis=1)
    return [_number(v, 1) for v in values]


def _envelope_b64(levels) -> str:
    """envelope_db points as int8 bytes in base64 (4 characters per 3 points; report.js decodes them)."""
    return base64.b64encode(np.clip(np.asarray(levels), -128, 127).astype(np.int8).tobytes()).decode("ascii")


def frame_series(batches: Iterable) -> dict:
    """``{track_id: {"short_term_hop_s", "short_term": {source: [...]}, "f0_hop_s", "f0": [...],
    "envelope": {source: base64}}}`` from record batches of the frames table (a column missing:
    that series is absent); read once, batch by batch, each series thinned as it is read
    (SHORT_TERM_POINTS, F0_POINTS; the frame levels to an envelope_db, for features that predate it)."""
    series = {}
    for batch in batches:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        short, f0, levels = _Lists(table, "short_term_lufs"), _Lists(table, "f0_hz"), _Lists(table, "rms_db")
        short_hops, frame_hops = _column(table, "short_term_hop_s"), _column(table, "frame_hop_s")
        for i, (track_id, source) in enumerate(zip(_column(table, "track_id"), _column(table, "source"))):
            entry = series.setdefault(track_id, {"short_term": {}, "envelope": {}})
            values = levels.row(i)
            if values is not None and values.size:
                entry["envelope"][source] = _envelope_b64(envelope_db(values))
            values = short.row(i)
            if values is not None and short_hops[i]:
                step = max(1, math.ceil(values.shape[0] / SHORT_TERM_POINTS))
                entry["short_term"][source] = _power_mean_lufs(values.astype(np.float64), SHORT_TERM_POINTS)
                entry["short_term_hop_s"] = _number(short_hops[i] * step, 4)
            values = f0.row(i)
            if values is not None and frame_hops[i] and np.any(np.isfinite(values)):
                step = max(1, math.ceil(values.shape[0] / F0_POINTS))
                entry["f0"] = _median_f0(values.astype(np.float64), F0_POINTS)
                entry["f0_hop_s"] = _number(frame_hops[i] * step, 5)
    return series


# ---------------------------------------------------------------------------------------------
# The page's data


SOURCE_FIELDS = (("duration_s", 3), ("integrated_lufs", 2), ("loudness_range_lu", 2), ("sample_peak_dbfs", 2),
                 ("rms_dbfs", 2), ("share_db", 2), ("spectral_centroid_hz_mean", 1), ("onset_rate_hz", 2))
TRACK_FIELDS = (("tempo_bpm", 2), ("vocal_presence_ratio", 4), ("first_vocal_s", 3), ("key_strength", 3), ("tuning_cents", 1),
                ("vocal_f0_median_hz", 1), ("vocal_f0_p05_hz", 1), ("vocal_f0_p95_hz", 1), ("vocal_voiced_ratio", 4))


class _Features:
    """The sources and tracks tables' columns, read once."""

    def __init__(self, sources: Optional[pa.Table], features: Optional[pa.Table]):
        names = [name for name, _ in SOURCE_FIELDS] + ["sample_rate", "source_uri", "status", "error", "feature_version"]
        self.sources = {name: _column(sources, name) for name in names}
        self.envelope = _Lists(sources, "envelope_db")
        names = [name for name, _ in TRACK_FIELDS] + ["tempo_source", "key_tonic", "key_mode", "tonality_source", "status", "error", "feature_version"]
        self.tracks = {name: _column(features, name) for name in names}
        self.beats = _Lists(features, "beat_times_s")
        self.segment_starts = _Lists(features, "vocal_segments", "start_s")
        self.segment_ends = _Lists(features, "vocal_segments", "end_s")

    def source(self, i: int) -> dict:
        row = {name: _number(self.sources[name][i], digits) for name, digits in SOURCE_FIELDS}
        row.update(sample_rate=self.sources["sample_rate"][i], status=self.sources["status"][i], error=self.sources["error"][i])
        envelope = self.envelope.row(i)
        if envelope is not None and envelope.size:
            row["envelope_b64"] = _envelope_b64(envelope)
        return row

    def track(self, i: int) -> dict:
        row = {name: _number(self.tracks[name][i], digits) for name, digits in TRACK_FIELDS}
        for name in ("tempo_source", "key_tonic", "key_mode", "tonality_source", "status", "error"):
            row[name] = self.tracks[name][i]
        beats = self.beats.row(i)
        row["beats"] = [] if beats is None else np.round(beats.astype(np.float64), 3).tolist()
        starts, ends = self.segment_starts.row(i), self.segment_ends.row(i)
        row["vocal_segments"] = None if starts is None else [[_number(s, 3), _number(e, 3)] for s, e in zip(starts, ends)]
        return row


def _key_name(tonic, mode) -> Optional[str]:
    return f"{tonic} {mode}" if tonic and mode else None


def _track_data(track: _Track, features: _Features, series: dict, stems: list, output: str) -> dict:
    """What the track view of ``track`` shows."""
    series = dict(series.get(track.id) or {})
    envelopes = series.pop("envelope", {})
    sources = []
    for name in [MIXTURE] + [s for s in stems if s in track.stems or s in track.sources] + [s for s in track.sources if s != MIXTURE and s not in stems]:
        stem_row = track.stems.get(name)
        index = track.sources.get(name)
        uri = stem_row["stem_uri"] if stem_row else (track.source_uri if name == MIXTURE and track.source_uri else None)
        if uri is None and index is not None:
            uri = features.sources["source_uri"][index]
        if uri is None and index is None:
            continue
        if track.status == "error" and track.separated:
            href = None  # a failed track's source gets no player: it is named as text with the reason
        else:
            href = stem_href(uri) if stem_row else audio_href(uri, output)
        entry = {"name": name, "uri": uri, "href": href}
        if stem_row:
            entry.update(duration_s=_number(stem_row["duration_s"], 4), sample_rate=stem_row["sample_rate"], channels=stem_row["channels"],
                         codec=stem_row["codec"])
        if index is not None:
            entry["features"] = features.source(index)
            if "envelope_b64" not in entry["features"] and name in envelopes:
                entry["features"]["envelope_b64"] = envelopes[name]
        sources.append(entry)
    stem_row = next(iter(track.stems.values()), None)
    data = {
        "id": track.id, "status": track.status, "error": track.error, "duration_s": _number(track.duration_s, 4), "sources": sources,
        "created_at": track.created_at.isoformat(timespec="seconds") if track.created_at else None,
        "model": stem_row["model"] if stem_row else None, "precision": stem_row["precision"] if stem_row else None,
        "features": None if track.features is None else features.track(track.features), "series": series or None,
    }
    if data["duration_s"] is None:
        data["duration_s"] = next((s["features"]["duration_s"] for s in sources if s.get("features") and s["features"].get("duration_s")), None)
    return data


def _table(tracks: list, features: _Features, stems: list) -> dict:
    """The track table, a column per field (the front page sorts, filters and pages it)."""
    columns = [
        {"key": "id", "label": "track", "type": "text"},
        {"key": "status", "label": "status", "type": "text"},
        {"key": "duration_s", "label": "duration (s)", "type": "number"},
        {"key": "lufs", "label": "mixture loudness (LUFS)", "type": "number"},
        {"key": "tempo_bpm", "label": "tempo (BPM)", "type": "number"},
        {"key": "key", "label": "key", "type": "text"},
        {"key": "vocals_pct", "label": "vocal activity (%)", "type": "number"},
        {"key": "first_vocal_s", "label": "first vocal (s)", "type": "number"},
        {"key": "f0_hz", "label": "vocal f0 median (Hz)", "type": "number"},
    ] + [{"key": f"share:{stem}", "label": f"{stem} share (dB)", "type": "number"} for stem in stems] + [
        {"key": "error", "label": "reason", "type": "text"},
    ]
    data = {column["key"]: [] for column in columns}
    for track in tracks:
        feature = track.features
        mixture = track.sources.get(MIXTURE)
        error = track.error
        if error is None and feature is not None and features.tracks["status"][feature] == "error":
            error = features.tracks["error"][feature]
        status = "failed" if track.status == "error" else ("features failed" if error else "ok")
        values = {
            "id": track.id, "status": status, "duration_s": _number(track.duration_s, 2),
            "lufs": _number(features.sources["integrated_lufs"][mixture], 1) if mixture is not None else None,
            "tempo_bpm": _number(features.tracks["tempo_bpm"][feature], 1) if feature is not None else None,
            "key": _key_name(features.tracks["key_tonic"][feature], features.tracks["key_mode"][feature]) if feature is not None else None,
            "vocals_pct": _number(features.tracks["vocal_presence_ratio"][feature] * 100, 1)
            if feature is not None and features.tracks["vocal_presence_ratio"][feature] is not None else None,
            "first_vocal_s": _number(features.tracks["first_vocal_s"][feature], 2) if feature is not None else None,
            "f0_hz": _number(features.tracks["vocal_f0_median_hz"][feature], 1) if feature is not None else None,
            "error": error,
        }
        for stem in stems:
            index = track.sources.get(stem)
            values[f"share:{stem}"] = _number(features.sources["share_db"][index], 1) if index is not None else None
        for key in data:
            data[key].append(values[key])
    # Columns with no value at all (an output without features, a model without vocals) are left out.
    kept = [c for c in columns if c["key"] in ("id", "status", "error") or any(v is not None for v in data[c["key"]])]
    return {"columns": kept, "data": {c["key"]: data[c["key"]] for c in kept}, "rows": len(tracks)}


def _failures(tracks: list, features: _Features) -> dict:
    """Failed separations (metadata error rows) and failed analyses (tracks-table errors), grouped
    by reason_group: the largest groups first, each with its count and first rows."""
    groups = {}
    total = 0
    for track in tracks:
        failures = []
        if track.separated and track.status == "error":
            failures.append(("separation", track.error, [track.source_uri, track.id]))
        if track.features is not None and features.tracks["status"][track.features] == "error":
            uris = [features.sources["source_uri"][i] for i in track.sources.values()]
            failures.append(("features", features.tracks["error"][track.features] or "failed (no reason given)", uris + [track.id]))
        for stage, reason, names in failures:
            total += 1
            group = groups.setdefault((stage, reason_group(reason, names)), [])
            group.append({"id": track.id, "file": names[0] if stage == "separation" else None, "reason": reason})
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    shown = [{"stage": stage, "reason": reason, "count": len(rows), "rows": rows[:MAX_FAILURE_ROWS]}
             for (stage, reason), rows in ordered[:MAX_FAILURE_GROUPS]]
    rest = sum(len(rows) for _, rows in ordered[MAX_FAILURE_GROUPS:])
    return {"total": total, "groups": shown, "more_groups": len(ordered) - len(shown), "more_rows": rest}


def _plots(tracks: list, features: _Features, stems: list) -> dict:
    """The corpus plots' aggregates (per source loudness and energy share, tempo, key, vocal activity)."""
    per_source = {}
    for track in tracks:
        for source, index in track.sources.items():
            if features.sources["status"][index] == "ok":
                per_source.setdefault(source, []).append(index)
    order = [MIXTURE] + stems + sorted(set(per_source) - set(stems) - {MIXTURE})
    # A source with no value (silent in every track) keeps its place with n = 0: the page says so.
    loudness = [{"source": s, **(box(features.sources["integrated_lufs"][i] for i in per_source[s]) or {"n": 0})} for s in order if s in per_source]
    share = [{"source": s, **(box(features.sources["share_db"][i] for i in per_source[s]) or {"n": 0})} for s in order if s in per_source and s != MIXTURE]
    rows = [t.features for t in tracks if t.features is not None]
    tempo = histogram([features.tracks["tempo_bpm"][i] for i in rows], 5.0)
    vocals = histogram([100 * v for v in (features.tracks["vocal_presence_ratio"][i] for i in rows) if v is not None], 5.0, 0.0, 100.0)
    keys = {}
    for i in rows:
        tonic, mode = features.tracks["key_tonic"][i], features.tracks["key_mode"][i]
        if tonic and mode:
            keys[(tonic, mode)] = keys.get((tonic, mode), 0) + 1
    tonics = [t for t in PITCH_CLASSES if any(k[0] == t for k in keys)] + sorted({k[0] for k in keys} - set(PITCH_CLASSES))
    key = {"tonics": tonics, "modes": {mode: [keys.get((t, mode), 0) for t in tonics] for mode in sorted({k[1] for k in keys})}} if keys else None
    return {"loudness": loudness, "share": share, "tempo": tempo, "key": key, "vocals": vocals}


def build_report(tables, settings: PageSettings, frames: Optional[Iterable] = None) -> Iterator:
    """The report folder's files for the tables of one output, as ``(relative path, bytes)``
    pairs made one after the other (a shard's tracks are turned into data only when its turn
    comes: the report of a large output is never held whole).

    Args:
        tables: pipeline.outputs.OutputTables (metadata and/or features; ``tables.frames`` is used
            when ``frames`` is not given).
        settings: PageSettings (the output's uri: audio links are relative to ``{output}/report/``).
        frames: record batches of the frames table, read once (large tables need not be held whole).
    Yields:
        ``("index.html", ...)``, ``("data/summary.js", ...)``, ``("data/tracks/00000.js", ...)``, ...
    """
    tracks, stems, rows = {}, [], []
    _from_metadata(tables.metadata, tracks, stems, rows)
    _from_features(tables.sources, tables.tracks, tracks, stems)
    features = _Features(tables.sources, tables.tracks)
    for track in tracks.values():
        if not track.separated:  # audio analysed by `stembeam features`: its status is the analysis'
            track.status = "error" if track.features is not None and features.tracks["status"][track.features] == "error" else "ok"
            mixture = track.sources.get(MIXTURE)
            track.duration_s = features.sources["duration_s"][mixture] if mixture is not None else None
    if frames is None and tables.frames is not None:
        frames = tables.frames.to_batches()
    series = frame_series(frames) if frames is not None else {}
    runs = _runs(rows, tracks, settings)
    ordered = sorted(tracks.values(), key=lambda t: t.id)
    shards = max(1, math.ceil(len(ordered) / settings.tracks_per_shard))

    for name, source in STATIC_FILES.items():
        yield name, _asset(source)
    if settings.plotly_js is not None:
        yield PLOTLY_FILE, settings.plotly_js
    yield SUMMARY_FILE, script_json("summary", _summary(tables, settings, ordered, features, stems, runs, bool(series), shards))
    yield TABLE_FILE, script_json("table", _table(ordered, features, stems))
    by_shard = [[] for _ in range(shards)]  # empty ones too: a link to an unknown id says so
    for track in ordered:
        by_shard[shard_of(track.id, shards)].append(track)
    for shard, members in enumerate(by_shard):
        yield shard_file(shard), script_json(f"shard:{shard}", {t.id: _track_data(t, features, series, stems, settings.output) for t in members})


def _summary(tables, settings: PageSettings, ordered: list, features: _Features, stems: list, runs: list, has_frames: bool, shards: int) -> dict:
    """The front page's data: what the output is, its runs and counts, failures, the corpus plots' aggregates."""
    latest = len(runs) - 1
    ok = [t for t in ordered if t.status == "ok"]
    versions = sorted({v for v in features.sources["feature_version"] + features.tracks["feature_version"] if v})
    generated = settings.generated_at or datetime.datetime.now(datetime.timezone.utc)
    return {
        "output": settings.output, "title": os.path.basename(settings.output.rstrip("/")) or settings.output,
        "generated_at": generated.isoformat(timespec="seconds"), "version": settings.version, "plotly_version": settings.plotly_version,
        "has_metadata": tables.metadata is not None, "has_features": tables.sources is not None or tables.tracks is not None,
        "has_frames": has_frames, "feature_versions": versions, "stems": stems,
        "vocal_pitch": any(v is not None for v in features.tracks["vocal_f0_median_hz"]),
        "counts": {
            "tracks": len(ordered), "ok": len(ok), "failed": sum(t.status == "error" for t in ordered),
            "separated": sum(t.run == latest for t in ok) if latest >= 0 else None,
            "already_done": sum(t.run is not None and t.run < latest for t in ok) if latest >= 0 else None,
            "audio_hours": _number(sum(t.duration_s or 0.0 for t in ok) / 3600, 3),
            "features_ok": sum(1 for s in features.tracks["status"] if s == "ok"),
            "features_failed": sum(1 for s in features.tracks["status"] if s == "error"),
        },
        "run_started": settings.run_started.isoformat(timespec="seconds") if settings.run_started else None,
        "run_flags": list(settings.run_flags),
        "run_gap_s": settings.run_gap_s,
        "runs": runs[-MAX_RUNS:], "more_runs": max(0, len(runs) - MAX_RUNS),
        "failures": _failures(ordered, features),
        "plots": _plots(ordered, features, stems),
        "shards": shards,
    }


def _asset(name: str) -> bytes:
    with open(os.path.join(ASSETS, name), "rb") as handle:
        return handle.read()
