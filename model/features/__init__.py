"""Signal analysis of separated stems (no Beam): loudness, spectrum, rhythm, vocals, tonality.

Every analyser is fed a source block by block and keeps only small per-frame series, so
memory does not grow with the track's length. ``analysis.analyse_track`` ties them together.
"""

# Bump when any feature's definition changes: stored per-track results of another version are recomputed.
FEATURE_VERSION = "1"
