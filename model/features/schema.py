"""pyarrow schemas of the three feature tables (``features/{sources,tracks,frames}-*.parquet``); units in the names.

Levels: ``*_dbfs`` and ``rms_db`` are dB re full scale (1.0; a full-scale sine's RMS is -3.01 dBFS),
``*_lufs`` BS.1770-4 loudness, ``*_lu`` loudness units, ``share_db`` dB re the mixture, ``*_s``
seconds, ``*_hz`` Hz. ``stems_created_at`` (every table): the identity of the stems a row was
computed from, the latest ``created_at`` of the track's ok stem rows in ``metadata/`` (null when
the stems are not a pipeline output's); rows whose track's stems differ are dropped after every
pipeline run (pipeline.tables.drop_stale_feature_rows).
"""
from __future__ import annotations

import pyarrow as pa

SOURCES_SCHEMA = pa.schema([
    ("track_id", pa.string()),
    ("source", pa.string()),
    ("source_uri", pa.string()),
    ("duration_s", pa.float64()),
    ("sample_rate", pa.int32()),
    ("integrated_lufs", pa.float64()),
    ("loudness_range_lu", pa.float64()),
    ("sample_peak_dbfs", pa.float64()),
    ("rms_dbfs", pa.float64()),  # RMS over all samples and channels, dBFS
    ("share_db", pa.float64()),  # 10 log10(source mean square / mixture mean square), per sample and channel, dB
    ("spectral_centroid_hz_mean", pa.float64()),
    ("spectral_centroid_hz_std", pa.float64()),
    ("spectral_flatness_mean", pa.float64()),
    ("zero_crossing_rate_mean", pa.float64()),
    ("onset_rate_hz", pa.float64()),
    ("mfcc_mean", pa.list_(pa.float64())),
    ("envelope_db", pa.list_(pa.int8())),  # level of 200 equal spans of the source, dBFS, whole dB (model/features/envelope.py)
    ("status", pa.string()),
    ("error", pa.string()),
    ("feature_version", pa.string()),
    ("stems_created_at", pa.timestamp("us", tz="UTC")),
])

SEGMENT = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64())])

TRACKS_SCHEMA = pa.schema([
    ("track_id", pa.string()),
    ("tempo_bpm", pa.float64()),
    ("tempo_source", pa.string()),
    ("beat_times_s", pa.list_(pa.float64())),
    ("vocal_presence_ratio", pa.float64()),
    ("vocal_segments", pa.list_(SEGMENT)),
    ("first_vocal_s", pa.float64()),
    ("key_tonic", pa.string()),
    ("key_mode", pa.string()),
    ("key_strength", pa.float64()),
    ("tuning_cents", pa.float64()),
    ("chroma_mean", pa.list_(pa.float64())),
    ("tonality_source", pa.string()),
    ("vocal_f0_median_hz", pa.float64()),
    ("vocal_f0_p05_hz", pa.float64()),
    ("vocal_f0_p95_hz", pa.float64()),
    ("vocal_voiced_ratio", pa.float64()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("feature_version", pa.string()),
    ("stems_created_at", pa.timestamp("us", tz="UTC")),
])

FRAMES_SCHEMA = pa.schema([
    ("track_id", pa.string()),
    ("source", pa.string()),
    ("frame_hop_s", pa.float64()),
    ("rms_db", pa.list_(pa.float32())),  # frame RMS of the 22.05 kHz mono mix, dBFS (Hann power gain compensated), every frame_hop_s
    ("vocal_active", pa.list_(pa.bool_())),
    ("f0_hz", pa.list_(pa.float32())),
    ("short_term_hop_s", pa.float64()),
    ("short_term_lufs", pa.list_(pa.float32())),  # 3 s windows, value i starting at i x short_term_hop_s (exact within a sample)
    ("feature_version", pa.string()),
    ("stems_created_at", pa.timestamp("us", tz="UTC")),
])

SOURCE_COLUMNS = tuple(SOURCES_SCHEMA.names)
TRACK_COLUMNS = tuple(TRACKS_SCHEMA.names)
