"""One PNG per track: each source's short-term loudness over time, vocal segments shaded, beats as ticks."""
from __future__ import annotations

import io

import numpy as np

FLOOR_LUFS = -60.0  # the plot's floor: quieter (and silent) stretches sit on it
COLOURS = {"mixture": "0.35", "vocals": "tab:red", "accompaniment": "tab:blue", "drums": "tab:orange", "bass": "tab:purple", "other": "tab:green", "piano": "tab:brown"}


def plot_track(track_id: str, short_term: dict, hop_s: float, track: dict, duration_s: float) -> bytes:
    """A PNG of one track's loudness over time, with its vocal segments, beats, tempo and key.

    Args:
        track_id: the title.
        short_term: ``{source: [m] float}`` short-term LUFS (3 s windows every ``hop_s``, the
            first centred at 1.5 s).
        hop_s: seconds between ``short_term`` values.
        track: the ``tracks`` row (vocal_segments, beat_times_s, tempo, key).
        duration_s: the track's length.
    Returns:
        The PNG's bytes.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.2), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    for segment in track.get("vocal_segments") or []:
        axes.axvspan(segment["start_s"], segment["end_s"], color="tab:red", alpha=0.12, lw=0)
    for name in sorted(short_term, key=lambda n: (n != "mixture", n)):
        values = np.asarray(short_term[name], dtype=float)
        silent = not np.any(np.isfinite(values) & (values > FLOOR_LUFS))
        values = np.where(np.isfinite(values), np.maximum(values, FLOOR_LUFS), FLOOR_LUFS)
        times = 1.5 + hop_s * np.arange(values.shape[0])  # each 3 s window drawn at its centre
        label = f"{name} (silent)" if silent else name
        axes.plot(times, values, lw=1.8 if name == "mixture" else 1.1, color=COLOURS.get(name), label=label)
    beats = track.get("beat_times_s") or []
    if beats:
        axes.vlines(beats, FLOOR_LUFS, FLOOR_LUFS + 4, color="black", lw=0.7, label="beats")
    axes.set_xlim(0, max(duration_s, 1.0))
    axes.set_ylim(FLOOR_LUFS, 0)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("short-term loudness (LUFS, 3 s)")
    facts = []
    if track.get("tempo_bpm"):
        facts.append(f"{track['tempo_bpm']:.1f} BPM ({track.get('tempo_source')})")
    if track.get("key_tonic"):
        facts.append(f"key {track['key_tonic']} {track['key_mode']}")
    if track.get("vocal_presence_ratio") is not None:
        facts.append(f"vocals {100 * track['vocal_presence_ratio']:.0f} % (shaded)")
    axes.set_title(f"{track_id}" + (" - " + ", ".join(facts) if facts else ""), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
