"""Signal analysis of separated stems (no Beam): loudness, spectrum, rhythm, vocals, tonality.

Every analyser is fed a source block by block and keeps only small per-frame series, so
memory does not grow with the track's length. ``analysis.analyse_track`` ties them together.
"""

# Bump when any feature's definition changes: stored per-track results of another version are recomputed.
# 2: share_db from mean squares, frame rms_db window-compensated, exact 10 ms loudness ticks, stems_created_at.
# 3: envelope_db (each source's level over time in 200 points).
FEATURE_VERSION = "3"
